"""URLs of the querylens demo: the bookshop at the root, querylens under the admin."""

from __future__ import annotations

from django.conf import settings
from django.contrib import admin
from django.urls import URLPattern, URLResolver, include, path

urlpatterns: list[URLPattern | URLResolver] = [
    # Before "admin/": the admin's catch-all would otherwise swallow these URLs.
    path("admin/querylens/", include("querylens.urls")),
    path("admin/", admin.site.urls),
    path("", include("shop.urls")),
]

if "debug_toolbar" in settings.INSTALLED_APPS:
    from debug_toolbar.toolbar import debug_toolbar_urls

    urlpatterns += debug_toolbar_urls()
