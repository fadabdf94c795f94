"""URLs of the admin pages; include them as ``path("admin/querylens/", include("querylens.urls"))``.

Put that line before ``path("admin/", admin.site.urls)``: the admin's
catch-all view would otherwise answer first.
"""

from __future__ import annotations

from django.urls import URLPattern, path

from querylens import views

app_name = "querylens"

urlpatterns: list[URLPattern] = [
    path("", views.hotspots, name="hotspots"),
    path("requests/", views.requests, name="requests"),
    path("requests/<str:request_id>/", views.request_detail, name="request"),
    path("requests/<str:request_id>/queries/<int:index>/explain/", views.explain, name="explain"),
]
