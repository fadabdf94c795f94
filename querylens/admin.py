"""The admin index links to the querylens pages (see ``querylens.models``)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import Model
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import NoReverseMatch, URLPattern, path, reverse

from querylens.models import HotspotsPage, RequestsPage


class PageLinkAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """An app-list entry whose only view redirects to a querylens page.

    Django's own permission checks apply: the entry shows to staff with the
    model's "view" permission (``querylens.permissions``).
    """

    #: Name of the querylens URL the entry opens.
    url_name = "querylens:hotspots"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def get_urls(self) -> list[URLPattern]:
        name = f"{self.opts.app_label}_{self.opts.model_name}_changelist"
        return [path("", self.admin_site.admin_view(self.open_page), name=name)]

    def open_page(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        try:
            return HttpResponseRedirect(reverse(self.url_name))
        except NoReverseMatch:
            raise Http404(
                'querylens.urls is not included: add path("admin/querylens/", include("querylens.urls")).'
            ) from None


@admin.register(HotspotsPage)
class HotspotsPageAdmin(PageLinkAdmin):
    url_name = "querylens:hotspots"


@admin.register(RequestsPage)
class RequestsPageAdmin(PageLinkAdmin):
    url_name = "querylens:requests"
