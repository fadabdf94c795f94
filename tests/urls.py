from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

from tests import views

_names = [
    "fk_loop",
    "fk_loop_fixed",
    "reverse_fk",
    "reverse_fk_fixed",
    "reverse_fk_prefetch_object",
    "m2m",
    "m2m_fixed",
    "reverse_m2m",
    "reverse_one_to_one",
    "reverse_one_to_one_fixed",
    "nested",
    "nested_after_prefetch",
    "nested_fixed",
    "chained_forward",
    "get_loop",
    "get_loop_fixed",
    "count_loop",
    "count_loop_fixed",
    "generic_fk",
    "generic_relation",
    "single_lazy_access",
    "duplicates",
    "raw_loop",
    "executemany",
    "failing_query",
    "savepoints",
    "template_fk",
    "template_fk_fixed",
    "no_queries",
    "server_timing",
    "async_get_loop",
    "async_fixed",
    "json_ok",
    "two_callers",
    "whoami",
    "async_whoami",
    "mutated_params",
    "huge_statement",
    "deep_recursion",
    "streamed_csv",
    "streamed_csv_fixed",
    "async_streamed",
]

try:  # Django REST framework is a test dependency, not querylens's
    from tests.api import router
except ImportError:
    api_urls = []
else:
    api_urls = [path("api/", include(router.urls))]

urlpatterns = [
    path("admin/querylens/", include("querylens.urls")),
    path("admin/", admin.site.urls),
    *[path(f"{name}/", getattr(views, name), name=name) for name in _names],
    *api_urls,
]
