"""A django-debug-toolbar panel showing querylens's findings for the page.

Add ``"querylens.panels.QueryLensPanel"`` to ``DEBUG_TOOLBAR_PANELS``. This is
the only querylens module that imports ``debug_toolbar`` (the optional
``querylens-profiler[toolbar]`` extra).

One capture, not two: the panel uses querylens's recorder. When
``QueryLensMiddleware`` runs outside the toolbar, the panel reads the
middleware's recorder; when it runs inside, the middleware finds the panel's
recorder active and analyses it, and the panel shows that analysis; without
the middleware, the panel records, analyses and stores the request itself so
the admin link and EXPLAIN work.

What the panel hands to the toolbar's store is ``RequestRecord.to_dict()``,
plain JSON, so the memory, database and cache stores and the history panel
can keep and re-show it.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from typing import Any

from debug_toolbar.panels import Panel
from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.middleware.csrf import get_token
from django.template.loader import render_to_string
from django.templatetags.static import static
from django.urls import NoReverseMatch, URLPattern, path, reverse
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.views.decorators.cache import never_cache

from querylens import capture, lifecycle
from querylens.fingerprint import statement_kind
from querylens.formatting import highlight_sql
from querylens.records import CallSite, QueryRecord, RequestRecord
from querylens.storage import get_storage

logger = logging.getLogger("querylens")

#: Requests to these URL namespaces are shown but never stored, like the
#: middleware does: querylens's own pages and the toolbar's.
#: Statement kinds the EXPLAIN button is offered for; the admin view decides
#: what it really runs (ANALYZE for reads only).
_EXPLAINABLE = frozenset({"select", "with", "insert", "update", "delete"})
#: Stands in for a query index while reversing the EXPLAIN URL once per page.
_INDEX_SENTINEL = 987654321


class QueryLensPanel(Panel):
    """Queries, duplicates and N+1s of the request, with fixes and EXPLAIN."""

    is_async = True
    nav_title = "querylens"
    template = "querylens/panel.html"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._recording: lifecycle.Recording | None = None
        self._started_it = False
        self._skipped: str | None = None
        if self.toolbar.request is not None and not isinstance(
            self.toolbar.store, _UnrecordedStore
        ):
            # The toolbar's store may be a database (DatabaseStore, a
            # DatabaseCache): its queries are the toolbar's, not the page's.
            # The toolbar sets its store up after building its panels.
            from debug_toolbar.store import get_store

            self.toolbar.store = _UnrecordedStore(self.toolbar.store or get_store())

    # -- what the sidebar shows without opening the panel ------------------

    @property
    def nav_subtitle(self) -> str:
        stats = self._stats()
        summary = self._summary()
        if summary is None:
            return "off" if stats.get("skipped") else "error"
        queries, n_plus_one, db_ms = summary
        text = (
            f"{queries} {'query' if queries == 1 else 'queries'} · {n_plus_one} N+1"
            f" · {_ms(db_ms)} ms"
        )
        # The toolbar shows the subtitle inside <small>; the class lets
        # panel.css colour it, the stylesheet link is needed because the
        # panel's own content (which links it too) loads only when opened.
        return format_html(
            '<span class="ql-nav{}">{}</span>{}',
            " ql-nav-warning" if n_plus_one else "",
            text,
            self._stylesheet(),
        )

    @property
    def nav_icon(self) -> str:  # type: ignore[override]  # a plain attribute in Panel
        summary = self._summary()
        if summary is not None and summary[1]:
            return "querylens/panel/icon-warning.svg"
        return "querylens/panel/icon.svg"

    @property
    def title(self) -> str:
        summary = self._summary()
        if summary is None:
            return "querylens"
        queries, n_plus_one, _ = summary
        found = f"{n_plus_one} N+1" if n_plus_one else "no N+1"
        return f"querylens: {found} in {queries} {'query' if queries == 1 else 'queries'}"

    @property
    def scripts(self) -> list[str]:
        return [*super().scripts, static("querylens/panel/panel.js")]

    @classmethod
    def get_urls(cls) -> list[URLPattern]:
        # Imported here: it loads the toolbar's models, so only once the
        # toolbar is an installed app.
        from debug_toolbar.decorators import require_show_toolbar

        view = require_show_toolbar(csrf_token)  # type: ignore[no-untyped-call]
        return [path("querylens/csrf/", view, name="querylens_csrf")]

    # -- capture -------------------------------------------------------------

    def enable_instrumentation(self) -> None:
        if self._recording is not None or self._skipped is not None:
            return
        try:
            self._skipped = lifecycle.skip_reason(self.toolbar.request.path)
            if self._skipped is None:
                # Shares QueryLensMiddleware's recording when it runs outside
                # the toolbar (a query is never counted twice). Otherwise the
                # toolbar middleware's frame, live while the request runs, is
                # where the stack walk stops, as at QueryLensMiddleware's.
                self._recording = lifecycle.start(
                    boundary=sys._getframe(1), scope=self.toolbar.request
                )
                # Whether the panel started this request's recording (then it
                # stores the record unless QueryLensMiddleware, inside, does).
                self._started_it = self._recording.joined == 0
        except Exception:
            logger.exception("querylens panel could not start recording")
            self._skipped = "querylens could not start recording; see the logs."

    def disable_instrumentation(self) -> None:
        if self._recording is not None:
            lifecycle.stop(self._recording)

    def generate_stats(self, request: HttpRequest, response: HttpResponse) -> None:
        recording = self._recording
        if recording is None:
            self._record_stats(
                {"skipped": self._skipped or "querylens did not record this request."}
            )
            return
        try:
            built = recording.record is None
            record = lifecycle.finish_request(recording, request, response)
            # Stored by QueryLensMiddleware when it runs; by the panel only
            # when the panel alone recorded the request.
            if built and self._started_it and not lifecycle.excluded_namespace(request):
                lifecycle.store(record)
            self._record_stats({"record": record.to_dict()})
        except Exception:
            logger.exception("querylens panel failed to analyse %s", request.path)
            self._record_stats({"error": "querylens failed to analyse this request; see the logs."})

    def generate_server_timing(self, request: HttpRequest, response: HttpResponse) -> None:
        # The toolbar sets Server-Timing from its panels' get_headers(),
        # replacing what the response had: the application's own entries and,
        # with querylens's middleware inside the toolbar's, the ``db`` entry.
        # Remember them here, where the response is at hand, and hand them
        # back below so the toolbar's value keeps them.
        self._server_timing = str(response.get("Server-Timing", "") or "")

    def get_headers(self, request: HttpRequest) -> dict[str, str]:
        headers: dict[str, str] = super().get_headers(request)  # type: ignore[no-untyped-call]
        kept = getattr(self, "_server_timing", "")
        if kept:
            own = headers.get("Server-Timing")
            headers["Server-Timing"] = f"{kept}, {own}" if own else kept
        return headers

    # -- content --------------------------------------------------------------

    @cached_property
    def content(self) -> str:
        stats = self._stats()
        context: dict[str, Any] = {
            "stylesheet": self._stylesheet(),
            "skipped": stats.get("skipped"),
            "error": stats.get("error"),
        }
        if "record" in stats:
            try:
                context.update(_record_context(RequestRecord.from_dict(stats["record"])))
            except Exception:
                # A record this version cannot read (from an older store, say).
                logger.exception("querylens panel could not show a stored record")
                context["error"] = "querylens could not show this request; see the logs."
        return render_to_string(self.template, context)

    # -- helpers --------------------------------------------------------------

    def _summary(self) -> tuple[int, int, float] | None:
        """Queries, N+1 groups and database ms, read from the stats alone.

        The sidebar of an earlier request (history panel) is drawn from the
        store, so nothing here may need more than the stored JSON.
        """
        record: Any = self._stats().get("record")
        try:
            return (
                int(record["query_count"]),
                sum(1 for group in record.get("n_plus_one") or [] if not group.get("allowed")),
                float(record["db_time_ms"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            return None

    def _stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = self.get_stats()  # type: ignore[no-untyped-call]
        return stats

    def _record_stats(self, stats: dict[str, Any]) -> None:
        self.record_stats(stats)  # type: ignore[no-untyped-call]

    def _stylesheet(self) -> SafeString:
        request = self.toolbar.request
        nonce = self.toolbar.csp_nonce if request is not None else None
        if nonce:
            return format_html(
                '<link rel="stylesheet" href="{}" nonce="{}">',
                static("querylens/panel/panel.css"),
                nonce,
            )
        return format_html('<link rel="stylesheet" href="{}">', static("querylens/panel/panel.css"))


@login_not_required
@never_cache
def csrf_token(request: HttpRequest) -> JsonResponse:
    """A CSRF token for the panel's EXPLAIN buttons.

    The panel's HTML is fetched later from the toolbar's store, without the
    request, so it cannot carry a token itself; this also sets the CSRF
    cookie (or session entry) when the page had none.
    """
    return JsonResponse({"token": get_token(request)})


class _UnrecordedStore:
    """The toolbar's store, with querylens not recording while it works."""

    def __init__(self, store: Any) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._store, name)
        if not callable(attribute):
            return attribute

        @functools.wraps(attribute)
        def unrecorded(*args: Any, **kwargs: Any) -> Any:
            with capture.paused():
                return attribute(*args, **kwargs)

        return unrecorded


def _record_context(record: RequestRecord) -> dict[str, Any]:
    stored = _is_stored(record.id)
    detail_url = _reverse("querylens:request", {"request_id": record.id}) if stored else None
    explain_template = (
        _reverse("querylens:explain", {"request_id": record.id, "index": _INDEX_SENTINEL})
        if stored
        else None
    )

    def explain_url(query: QueryRecord) -> str | None:
        if explain_template is None or statement_kind(query.sql) not in _EXPLAINABLE:
            return None
        return explain_template.replace(str(_INDEX_SENTINEL), str(query.index))

    group_of: dict[int, int] = {}
    for number, group in enumerate(record.n_plus_one, start=1):
        for index in group.query_indexes:
            group_of[index] = number
    duplicated = {index for group in record.duplicates for index in group.query_indexes}
    by_index = {query.index: query for query in record.queries}

    repeats = record.repeats_in_n_plus_one()
    n_plus_one = []
    for number, group in enumerate(record.n_plus_one, start=1):
        first = by_index.get(group.query_indexes[0]) if group.query_indexes else None
        n_plus_one.append(
            {
                "number": number,
                "group": group,
                "where": _where(group.callsite),
                "stack": [_where(site) for site in first.stack[1:]] if first else [],
                "sql": highlight_sql(group.sample_sql),
                "first": first,
                "explain_url": explain_url(first) if first else None,
                "repeats": repeats.get(number, 0),
            }
        )
    # The same rule as the request page: a duplicate group belongs to the
    # N+1 group that holds all of its queries, and is shown as part of it.
    within = record.duplicates_in_n_plus_one()
    duplicates = []
    for number, duplicate in enumerate(record.duplicates, start=1):
        if number in within:
            continue
        indexes = duplicate.query_indexes
        repeated = by_index.get(indexes[0]) if indexes else None
        duplicates.append(
            {
                "group": duplicate,
                # One line: the groups often share their SQL and differ only
                # in their parameters, which are what the row must show.
                "sql": highlight_sql(duplicate.sql, reformat=False),
                "params": _params_text(repeated.params) if repeated else None,
                "indexes": ", ".join(f"#{i}" for i in indexes),
            }
        )
    queries = [
        {
            "query": query,
            "sql": highlight_sql(query.sql),
            "where": _where(query.callsite),
            "stack": [_where(site) for site in query.stack[1:]],
            "group": group_of.get(query.index),
            "duplicate": query.index in duplicated,
            "explain_url": explain_url(query),
            "params": _params_text(query.params),
            "duration": f"{query.duration_ms:.2f}",
        }
        for query in record.queries
    ]
    return {
        "record": record,
        "stored": stored,
        "detail_url": detail_url,
        "csrf_url": _reverse("djdt:querylens_csrf", {}) if explain_template else None,
        "n_plus_one": n_plus_one,
        "duplicates": duplicates,
        "queries": queries,
    }


def _where(site: CallSite | None) -> dict[str, Any] | None:
    if site is None:
        return None
    if site.is_template:
        return {"text": f"{site.file}, line {site.line}", "template": True, "function": None}
    return {"text": str(site), "template": False, "function": site.function}


def _params_text(params: Any) -> str | None:
    if params is None or params == [] or params == {}:
        return None
    # Recorded params are JSON already (analysis made them so); str() is for
    # a record read from an older or foreign store.
    return json.dumps(params, ensure_ascii=False, default=str)


def _ms(value: float) -> str:
    return f"{value:.1f}" if value >= 1 else f"{value:.2f}"


def _reverse(name: str, kwargs: dict[str, Any]) -> str | None:
    try:
        return reverse(name, kwargs=kwargs)
    except NoReverseMatch:
        return None


def _is_stored(request_id: str) -> bool:
    try:
        return get_storage().get(request_id) is not None
    except Exception:
        logger.warning("querylens panel could not read storage", exc_info=True)
        return False
