from __future__ import annotations

from django.shortcuts import render
from django.urls import include, path
from wagtail import urls as wagtail_urls
from wagtail.admin import urls as wagtailadmin_urls
from wagtail.images import get_image_model


def gallery(request):  # type: ignore[no-untyped-def]
    images = get_image_model().objects.order_by("pk")
    return render(request, "gallery.html", {"images": images})


def gallery_fixed(request):  # type: ignore[no-untyped-def]
    # The fix querylens suggests, pasted on the queryset that feeds the loop.
    images = get_image_model().objects.order_by("pk").prefetch_related("renditions")
    return render(request, "gallery.html", {"images": images})


urlpatterns = [
    path("gallery/", gallery),
    path("gallery-fixed/", gallery_fixed),
    path("admin/", include(wagtailadmin_urls)),
    path("", include(wagtail_urls)),
]
