"""The admin pages: hotspots, requests, one request, EXPLAIN.

Views stay thin: the numbers come from ``querylens.hotspots`` and the plans
from ``querylens.explain``. Every page needs active staff with querylens's
permission for it (``querylens.permissions``); anonymous visitors go to the
admin login, everybody else gets a 403.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from functools import wraps
from typing import Any

import django
from django.contrib import admin
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.template.loader import render_to_string
from django.urls import NoReverseMatch, reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from querylens import permissions
from querylens.conf import conf
from querylens.explain import explain_query
from querylens.hotspots import (
    QUERIES_PER_PAGE,
    build_report,
    filter_records,
    query_roles,
    ranking_chart,
    waterfall,
)
from querylens.records import QueryRecord, RequestRecord
from querylens.storage import get_storage

logger = logging.getLogger("querylens")

REQUESTS_PER_PAGE = 50
_REQUEST_ID = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")

View = Callable[..., HttpResponse]


class StorageUnavailable(Exception):
    """The storage backend failed; the page says so instead of crashing."""


def permission_required(permission: str) -> Callable[[View], View]:
    """Active staff with ``permission`` only (see ``querylens.permissions``).

    Anonymous users get the login page, everybody else a 403 with no data.
    """

    def decorator(view: View) -> View:
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            user = request.user
            if not user.is_authenticated:
                return redirect_to_login(request.get_full_path(), _login_url())
            if not permissions.allowed(user, permission):
                raise PermissionDenied
            try:
                return view(request, *args, **kwargs)
            except StorageUnavailable:
                return _storage_unavailable(request)

        return wrapper

    return decorator


@never_cache
@permission_required(permissions.VIEW_HOTSPOTS)
@require_GET
def hotspots(request: HttpRequest) -> HttpResponse:
    records, skipped = _recent()
    report = build_report(records)
    dropped = _dropped()
    if request.GET.get("format") == "json":
        return JsonResponse({**report.to_dict(), "skipped": skipped, "dropped": dropped})
    return _render(
        request,
        "querylens/hotspots.html",
        {
            "title": "N+1 hotspots",
            "ql_tab": "hotspots",
            "report": report,
            "chart": ranking_chart(report.ranking),
            "skipped": skipped,
            "dropped": dropped,
            # The slow-query table's EXPLAIN buttons and links.
            "can_explain": permissions.allowed(request.user, permissions.EXPLAIN),
            "can_view_requests": permissions.allowed(request.user, permissions.VIEW_REQUESTS),
        },
    )


@never_cache
@permission_required(permissions.VIEW_REQUESTS)
@require_GET
def requests(request: HttpRequest) -> HttpResponse:
    path = request.GET.get("path", "")[:200]
    n_plus_one = request.GET.get("n_plus_one") == "1"
    recent, skipped = _recent()
    records = filter_records(recent, path=path, n_plus_one=n_plus_one)
    page = Paginator(records, REQUESTS_PER_PAGE).get_page(request.GET.get("page"))
    return _render(
        request,
        "querylens/requests.html",
        {
            "title": "Recorded requests",
            "ql_tab": "requests",
            "crumbs": [("Recorded requests", None)],
            "page": page,
            "path": path,
            "n_plus_one": n_plus_one,
            "skipped": skipped,
            "dropped": _dropped(),
        },
    )


@never_cache
@permission_required(permissions.VIEW_REQUESTS)
@require_GET
def request_detail(request: HttpRequest, request_id: str) -> HttpResponse:
    record = _record(request_id)
    if request.GET.get("format") == "json":
        return JsonResponse(record.to_dict())
    roles = query_roles(record)
    within = record.duplicates_in_n_plus_one()
    repeats = record.repeats_in_n_plus_one()
    page = Paginator(record.queries, QUERIES_PER_PAGE).get_page(request.GET.get("page"))
    queries: list[QueryRecord] = list(page.object_list)
    return _render(
        request,
        "querylens/request.html",
        {
            "title": f"{record.method} {record.path}",
            "ql_tab": "requests",
            "crumbs": [
                ("Recorded requests", reverse("querylens:requests")),
                (f"{record.method} {record.path}", None),
            ],
            "record": record,
            "page": page,
            "rows": [{"query": query, "role": roles.get(query.index)} for query in queries],
            "n_plus_one": [
                {
                    "number": number,
                    "group": group,
                    "repeats": repeats.get(number, 0),
                    "source": _source(record, group.source_query),
                    **_group_links(group.query_indexes),
                }
                for number, group in enumerate(record.n_plus_one, start=1)
            ],
            # Duplicates an N+1 group explains are shown as part of it.
            "duplicates": [
                {"number": number, "group": dup, **_group_links(dup.query_indexes)}
                for number, dup in enumerate(record.duplicates, start=1)
                if number not in within
            ],
            "repeats_in_n_plus_one": sum(repeats.values()),
            "waterfall": waterfall(record, queries, roles),
        },
    )


@never_cache
@permission_required(permissions.EXPLAIN)
@require_POST
def explain(request: HttpRequest, request_id: str, index: int) -> HttpResponse:
    record = _record(request_id)
    query = next((q for q in record.queries if q.index == index), None)
    if query is None:
        raise Http404("No such query in this request.")
    result = explain_query(query)
    if request.GET.get("format") == "json":
        # A refusal, a failure or a timeout still carries the whole shape, with
        # "error" set; the status tells a script it got no plan.
        return JsonResponse(result.to_dict(), status=422 if result.error else 200)
    return _render(
        request,
        "querylens/explain.html",
        {
            "title": f"EXPLAIN of query #{query.index}",
            "ql_tab": "requests",
            "crumbs": [
                ("Recorded requests", reverse("querylens:requests")),
                (f"{record.method} {record.path}", _request_url(record.id)),
                (
                    f"Query #{query.index}",
                    f"{_request_url(record.id)}?page={query.index // QUERIES_PER_PAGE + 1}"
                    f"#q-{query.index}",
                ),
                ("EXPLAIN", None),
            ],
            "record": record,
            "query": query,
            "result": result,
            "timeout_ms": conf.EXPLAIN_TIMEOUT_MS,
            "query_page": query.index // QUERIES_PER_PAGE + 1,
        },
    )


# --- helpers ---------------------------------------------------------------------


def _recent() -> tuple[list[RequestRecord], int]:
    """The buffered records, newest first, and how many were unreadable."""
    try:
        return get_storage().recent_and_skipped()
    except Exception as exc:
        logger.warning("querylens storage unavailable for the admin pages", exc_info=True)
        raise StorageUnavailable from exc


def _dropped() -> int:
    """Records a shared storage could not take (too slow or down); 0 if unknown."""
    try:
        return get_storage().dropped()
    except Exception:
        return 0


def _record(request_id: str) -> RequestRecord:
    if not _REQUEST_ID.match(request_id):
        raise Http404("Malformed request id.")
    try:
        record = get_storage().get(request_id)
    except Exception as exc:
        logger.warning("querylens storage unavailable for the admin pages", exc_info=True)
        raise StorageUnavailable from exc
    if record is None:
        raise Http404("This request is not in the buffer (any more).")
    return record


def _storage_unavailable(request: HttpRequest) -> HttpResponse:
    message = "The querylens storage is unavailable; the server log has the details."
    if request.GET.get("format") == "json":
        return JsonResponse({"error": message}, status=503)
    return _render(
        request,
        "querylens/unavailable.html",
        {
            "title": "Storage unavailable",
            "message": message,
            "crumbs": [("Storage unavailable", None)],
        },
        status=503,
    )


def _render(
    request: HttpRequest, template: str, context: dict[str, Any], *, status: int = 200
) -> HttpResponse:
    # The admin's own context (site header, sidebar, theme toggle) so the
    # pages sit inside the admin like any of its own.
    base = admin.site.each_context(request)
    # Django 6.1's admin styles breadcrumbs as <ol class="breadcrumbs"> only.
    base["ql_ol_breadcrumbs"] = django.VERSION >= (6, 1)
    html = render_to_string(template, {**base, **context}, request=request)
    # Recorded values come from any code (a lone surrogate in a parameter):
    # what UTF-8 cannot encode is shown as an escape instead of failing the page.
    return HttpResponse(html.encode("utf-8", "backslashreplace"), status=status)


def _request_url(request_id: str) -> str:
    return reverse("querylens:request", kwargs={"request_id": request_id})


def _login_url() -> str:
    try:
        return reverse("admin:login")
    except NoReverseMatch:
        from django.conf import settings

        return str(settings.LOGIN_URL)


def _source(record: RequestRecord, index: int | None) -> dict[str, Any] | None:
    """The query that loaded a group's objects: its link and call site."""
    if index is None:
        return None
    query = next((q for q in record.queries if q.index == index), None)
    if query is None:
        return None
    return {"index": index, "page": index // QUERIES_PER_PAGE + 1, "callsite": query.callsite}


def _group_links(indexes: list[int]) -> dict[str, Any]:
    """The first few queries of a group, with the page each one is on."""
    shown = [{"index": i, "page": i // QUERIES_PER_PAGE + 1} for i in indexes[:8]]
    return {"links": shown, "more": max(len(indexes) - len(shown), 0)}
