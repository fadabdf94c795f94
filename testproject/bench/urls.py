from __future__ import annotations

from django.conf import settings
from django.urls import URLPattern, URLResolver, include, path

from bench import views

urlpatterns: list[URLPattern | URLResolver] = [
    path("bench/light/", views.light, name="light"),
    path("bench/queries/", views.queries, name="queries"),
    path("bench/scale/", views.scale, name="scale"),
    path("bench/nplusone/", views.nplusone, name="nplusone"),
]

if "silk" in settings.INSTALLED_APPS:
    urlpatterns.append(path("silk/", include("silk.urls", namespace="silk")))

if "debug_toolbar" in settings.INSTALLED_APPS:
    # Included directly: debug_toolbar_urls() adds nothing when DEBUG is off,
    # and the toolbar needs its URLs to render.
    urlpatterns.append(path("__debug__/", include("debug_toolbar.urls")))
