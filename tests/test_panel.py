"""The django-debug-toolbar panel, driven through the real toolbar.

Each test turns the toolbar on with settings overrides (DEBUG, INTERNAL_IPS,
the ``debug_toolbar`` app, its middleware and URLs), requests a page, then
fetches the panel's HTML from the toolbar's ``render_panel`` view, as the
toolbar's JavaScript does when the panel is opened.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from html import unescape
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import iscoroutinefunction
from django.contrib.auth.models import User
from django.db import connection
from django.http import HttpRequest, HttpResponse
from django.test import AsyncClient, Client
from django.urls import include, path, reverse

from querylens.records import RequestRecord
from querylens.storage import get_storage, reset_storage
from querylens.testing import recorded
from tests.factories import make_library
from tests.helpers import VIEWS_FILE, line_of, querylens_staff
from tests.models import Book

PANEL = "querylens.panels.QueryLensPanel"
TOOLBAR = "debug_toolbar.middleware.DebugToolbarMiddleware"
QUERYLENS = "querylens.middleware.QueryLensMiddleware"
SECURITY = "django.middleware.security.SecurityMiddleware"
REST = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
#: Where the toolbar sits relative to QueryLensMiddleware.
ORDERS = {
    "querylens_outside": [SECURITY, QUERYLENS, TOOLBAR, *REST],
    "toolbar_outside": [SECURITY, TOOLBAR, QUERYLENS, *REST],
    "panel_only": [SECURITY, TOOLBAR, *REST],
}
BOTH = ["querylens_outside", "toolbar_outside"]


def as_page(view: Callable[..., Any]) -> Callable[..., Any]:
    """``view`` with its text wrapped in an HTML page, where the toolbar goes."""

    def page(response: HttpResponse) -> HttpResponse:
        body = response.content.decode()
        response.content = f"<!DOCTYPE html><html><body><p>{body}</p></body></html>".encode()
        return response

    if iscoroutinefunction(view):

        async def async_wrapper(request: HttpRequest) -> HttpResponse:
            return page(await view(request))

        return async_wrapper

    def wrapper(request: HttpRequest) -> HttpResponse:
        return page(view(request))

    return wrapper


def toolbar_urlconf(with_querylens: bool = True) -> types.ModuleType:
    """The test views as HTML pages, querylens's and the toolbar's URLs.

    The toolbar caches its URL patterns (panel URLs included) the first time
    they are read, so they are rebuilt here instead of importing
    ``debug_toolbar.urls``.
    """
    from debug_toolbar.toolbar import DebugToolbar

    from tests import urls, views

    DebugToolbar._urlpatterns = None
    module = types.ModuleType("tests_panel_urls")
    module.urlpatterns = [  # type: ignore[attr-defined]
        *urls.urlpatterns[0 if with_querylens else 1 : 2],  # querylens's pages, the admin
        *[path(f"{name}/", as_page(getattr(views, name)), name=name) for name in urls._names],
        path("__debug__/", include((DebugToolbar.get_urls(), "djdt"))),
    ]
    return module


def enable_toolbar(
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
    order: str = "querylens_outside",
    store: str = "debug_toolbar.store.MemoryStore",
    panels: list[str] | None = None,
    with_querylens_urls: bool = True,
    **config: Any,
) -> None:
    """Turn the toolbar on for this test, with the querylens panel."""
    settings.DEBUG = True
    settings.INTERNAL_IPS = ["127.0.0.1"]
    if "debug_toolbar" not in settings.INSTALLED_APPS:
        settings.INSTALLED_APPS = [*settings.INSTALLED_APPS, "debug_toolbar"]
    from debug_toolbar import settings as dt_settings
    from debug_toolbar.middleware import show_toolbar_func_or_path
    from debug_toolbar.toolbar import DebugToolbar

    settings.DEBUG_TOOLBAR_CONFIG = {
        "TOOLBAR_STORE_CLASS": store,
        # The toolbar refuses to run under a test runner unless told.
        "IS_RUNNING_TESTS": False,
        **config,
    }
    if panels is None:
        panels = [*dt_settings.PANELS_DEFAULTS, PANEL]
    settings.DEBUG_TOOLBAR_PANELS = panels
    settings.MIDDLEWARE = ORDERS[order]
    monkeypatch.setattr(DebugToolbar, "_urlpatterns", None)
    module = toolbar_urlconf(with_querylens_urls)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    settings.ROOT_URLCONF = module.__name__
    # Cached for the process by the toolbar; another test may have resolved
    # a different callback.
    show_toolbar_func_or_path.cache_clear()
    from debug_toolbar.store import MemoryStore

    MemoryStore.clear()


@pytest.fixture(autouse=True)
def _fresh_storage() -> Iterator[None]:
    reset_storage()
    get_storage().clear()
    yield
    reset_storage()


@pytest.fixture
def library(db: None) -> list[Book]:
    return make_library()


# -- helpers ------------------------------------------------------------------


def toolbar_id(response: Any) -> str:
    """The toolbar's id for a request (the history panel sends it as a header)."""
    request_id = response.get("djdt-request-id")
    assert request_id, "the toolbar did not handle this request"
    return str(request_id)


def sidebar_subtitle(html: str) -> str:
    """The panel's subtitle text in the toolbar's sidebar, as a user reads it."""
    match = re.search(r'id="djdt-QueryLensPanel".*?<small>(.*?)</small>', html, re.DOTALL)
    assert match, "the querylens panel is not in the toolbar's sidebar"
    return unescape(re.sub(r"<[^>]+>", "", match.group(1))).strip()


def panel_content(client: Client, response: Any) -> str:
    """The panel's HTML, fetched the way the toolbar's JavaScript does."""
    answer = client.get(
        reverse("djdt:render_panel"),
        {"request_id": toolbar_id(response), "panel_id": "QueryLensPanel"},
    )
    assert answer.status_code == 200
    return str(answer.json()["content"])


def panel_stats(response: Any) -> dict[str, Any]:
    """What the panel saved in the toolbar's store for this request."""
    from debug_toolbar.toolbar import DebugToolbar

    toolbar = DebugToolbar.fetch(toolbar_id(response), "QueryLensPanel")
    assert toolbar is not None
    stats: dict[str, Any] = toolbar.get_panel_by_id("QueryLensPanel").get_stats()
    return stats


_BLOCK = re.compile(r"</?(?:td|th|tr|p|div|li|ol|ul|pre|br|h\d|table|details|summary)\b[^>]*>")


def text(html: str) -> str:
    """Visible text of some HTML, whitespace collapsed, cells kept apart."""
    spaced = _BLOCK.sub(" ", html)
    return " ".join(unescape(re.sub(r"<[^>]+>", "", spaced)).split())


def book_count() -> int:
    return Book.objects.count()


# -- importing ----------------------------------------------------------------


def test_importing_querylens_does_not_import_the_toolbar() -> None:
    root = Path(__file__).resolve().parent.parent
    code = (
        "import importlib, pkgutil, sys, django\n"
        "django.setup()\n"
        "import querylens\n"
        "names = [m.name for m in pkgutil.iter_modules(querylens.__path__) if m.name != 'panels']\n"
        "for name in names:\n"
        "    importlib.import_module('querylens.' + name)\n"
        "print(len(names), 'debug_toolbar' in sys.modules)\n"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    imported, toolbar_loaded = result.stdout.split()
    assert int(imported) >= 10
    assert toolbar_loaded == "False"


# -- what the developer sees ---------------------------------------------------


@pytest.mark.parametrize("order", list(ORDERS))
def test_n_plus_one_page_shows_the_group_first(
    order: str, client: Client, library: list[Book], settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    enable_toolbar(settings, monkeypatch, order)
    response = client.get("/fk_loop/")
    html = response.content.decode()
    assert response.status_code == 200
    expected = 1 + len(library)

    subtitle = sidebar_subtitle(html)
    assert re.fullmatch(rf"{expected} queries · 1 N\+1 · [\d.]+ ms", subtitle), subtitle
    assert "ql-nav-warning" in html
    assert "icon-warning" not in html  # the icon is inlined, not linked
    content = panel_content(client, response)
    visible = text(content)
    assert visible.index("N+1 queries") < visible.index("All queries")
    line = line_of("fk_loop")
    assert f"{VIEWS_FILE}:{line}" in visible
    assert "in fk_loop()" in visible
    assert "tests.Book.author" in visible
    assert 'select_related("author")' in visible
    # The group's row: number, where, relation, fix, count, time.
    group_row = re.search(r'<tr class="ql-n-plus-one">(.*?)</tr>', content, re.DOTALL)
    assert group_row
    assert f">{len(library)}</td>" in group_row.group(1)
    # Its exact repeats are part of the group, not a table of their own.
    assert "also removes 3 exact repeats" in text(group_row.group(1))
    assert "Duplicate queries" not in visible
    assert "No N+1" not in visible


@pytest.mark.parametrize("order", list(ORDERS))
def test_clean_page_has_no_n_plus_one(
    order: str, client: Client, library: list[Book], settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    enable_toolbar(settings, monkeypatch, order)
    response = client.get("/fk_loop_fixed/")
    html = response.content.decode()
    subtitle = sidebar_subtitle(html)
    assert re.fullmatch(r"1 query · 0 N\+1 · [\d.]+ ms", subtitle), subtitle
    assert "ql-nav-warning" not in html
    visible = text(panel_content(client, response))
    assert "No N+1 queries on this page." in visible
    assert "querylens: no N+1 in 1 query" in text(html)
    assert "Duplicate queries" not in visible
    # All queries, highlighted by Pygments (keywords in their own spans).
    assert "All queries" in visible
    assert "INNER JOIN" in visible


def test_all_queries_show_formatted_highlighted_sql_and_durations(
    client: Client, library: list[Book], settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    enable_toolbar(settings, monkeypatch)
    response = client.get("/duplicates/")
    content = panel_content(client, response)
    record = RequestRecord.from_dict(panel_stats(response)["record"])
    rows = re.findall(r"<tr class=\"\">(.*?)</tr>", content, re.DOTALL)
    assert len(rows) == record.query_count == 2
    for query, row in zip(record.queries, rows, strict=True):
        assert f"{query.duration_ms:.2f} ms" in row
        # sqlparse put the FROM on its own line; Pygments marked the keywords.
        assert '<span class="k">SELECT</span>' in row
        assert '\n<span class="k">FROM</span>' in row
    visible = text(content)
    assert visible.index("Duplicate queries") < visible.index("All queries")
    duplicate_row = re.search(
        r'<table class="ql-duplicates">.*?<tbody>(.*?)</tbody>', content, re.DOTALL
    )
    assert duplicate_row
    assert text(duplicate_row.group(1)).endswith("[1] #0, #1")
    assert text(duplicate_row.group(1)).startswith("2 SELECT COUNT(*)")
    assert visible.count("params: [1]") == 2


def test_template_call_site_shows_template_and_line(
    client: Client, library: list[Book], settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    enable_toolbar(settings, monkeypatch)
    response = client.get("/template_fk/")
    content = panel_content(client, response)
    (group,) = panel_stats(response)["record"]["n_plus_one"]
    assert group["callsite"]["file"] == "tests/books.html"
    template_line = group["callsite"]["line"]
    group_row = re.search(r'<tr class="ql-n-plus-one">(.*?)</tr>', content, re.DOTALL)
    assert group_row
    assert f"tests/books.html, line {template_line}" in text(group_row.group(1))
    assert "template" in text(group_row.group(1))


# -- one capture, never two -----------------------------------------------------


@pytest.mark.parametrize("order", BOTH)
def test_panel_header_and_view_agree_on_the_count(
    order: str, client: Client, library: list[Book], settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    enable_toolbar(settings, monkeypatch, order)
    expected = 1 + len(library)
    response = client.get("/fk_loop/")
    record = panel_stats(response)["record"]
    assert record["query_count"] == expected
    assert response["X-QueryLens-Queries"] == str(expected)
    assert response["X-QueryLens-NPlusOne"] == "1"
    assert len(record["queries"]) == expected


def test_toolbar_outside_shows_the_middlewares_record(
    client: Client, library: list[Book], settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    enable_toolbar(settings, monkeypatch, "toolbar_outside")
    response = client.get("/fk_loop/")
    record = panel_stats(response)["record"]
    assert record["id"] == response["X-QueryLens-Request"]
    assert [r.id for r in get_storage().recent()] == [record["id"]]


def test_querylens_outside_stores_the_panels_record_once(
    client: Client, library: list[Book], settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    enable_toolbar(settings, monkeypatch, "querylens_outside")
    response = client.get("/fk_loop/")
    record = panel_stats(response)["record"]
    assert [r.id for r in get_storage().recent()] == [record["id"]]
    assert response["X-QueryLens-Request"] == record["id"]


def test_panel_alone_records_and_stores_the_request(
    client: Client, library: list[Book], settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    enable_toolbar(settings, monkeypatch, "panel_only")
    response = client.get("/fk_loop/")
    assert "X-QueryLens-Queries" not in response
    record = panel_stats(response)["record"]
    assert record["query_count"] == 1 + len(library)
    (stored,) = get_storage().recent()
    assert stored.id == record["id"]
    assert stored.to_dict() == record
    assert stored.n_plus_one[0].relation == "tests.Book.author"
    # The stack walk stopped at the toolbar: the test calling the client is
    # the same for every query and never a call site.
    functions = {site.function for query in stored.queries for site in query.stack}
    assert functions == {"fk_loop", "wrapper"}


def test_disabled_panel_leaves_the_middleware_counting(
    client: Client, library: list[Book], settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    enable_toolbar(settings, monkeypatch, "querylens_outside")
    client.cookies["djdtQueryLensPanel"] = "off"
    response = client.get("/fk_loop/")
    assert response["X-QueryLens-Queries"] == str(1 + len(library))
    assert "X-QueryLens-Queries" in response
    assert panel_stats(response) == {}


def test_recording_block_around_the_request_keeps_recording(
    client: Client, library: list[Book], settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    enable_toolbar(settings, monkeypatch, "panel_only")
    with recorded() as result:
        response = client.get("/fk_loop/")
        Book.objects.count()
    assert panel_stats(response)["record"]["query_count"] == 1 + len(library)
    assert result.record.query_count == 1 + len(library) + 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("order", list(ORDERS))
async def test_asgi_request_is_recorded_once(
    order: str, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from asgiref.sync import sync_to_async

    enable_toolbar(settings, monkeypatch, order)
    books = await sync_to_async(make_library)()
    client = AsyncClient()
    response = await client.get("/async_get_loop/")
    assert response.status_code == 200
    expected = 1 + len(books)
    stats = await sync_to_async(panel_stats)(response)
    record = stats["record"]
    assert record["query_count"] == expected
    if order != "panel_only":
        assert response["X-QueryLens-Queries"] == str(expected)
    (group,) = record["n_plus_one"]
    assert group["count"] == len(books)
    assert group["callsite"]["file"] == VIEWS_FILE
    assert group["callsite"]["line"] == line_of("async_get")
    content = (
        await client.get(
            reverse("djdt:render_panel"),
            {"request_id": toolbar_id(response), "panel_id": "QueryLensPanel"},
        )
    ).json()["content"]
    assert f"{VIEWS_FILE}:{line_of('async_get')}" in text(content)


# -- the toolbar's stores and history ------------------------------------------------


@contextmanager
def history_table() -> Iterator[None]:
    """The table of the toolbar's DatabaseStore (its migrations are not run here)."""
    from debug_toolbar.models import HistoryEntry

    with connection.schema_editor() as editor:
        editor.create_model(HistoryEntry)
    try:
        yield
    finally:
        with connection.schema_editor() as editor:
            editor.delete_model(HistoryEntry)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "store",
    [
        "debug_toolbar.store.MemoryStore",
        "debug_toolbar.store.DatabaseStore",
        "debug_toolbar.store.CacheStore",
    ],
)
@pytest.mark.parametrize("order", list(ORDERS))
def test_stats_survive_the_store_round_trip(
    store: str, order: str, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    enable_toolbar(settings, monkeypatch, order, store=store)
    table = history_table() if store.endswith("DatabaseStore") else nullcontext()
    with table:
        library = make_library()
        client = Client()
        response = client.get("/fk_loop/")
        stats = panel_stats(response)
        # Plain JSON all the way down: no fallback to str() by the toolbar.
        assert json.loads(json.dumps(stats)) == stats
        record = RequestRecord.from_dict(stats["record"])
        assert record.to_dict() == stats["record"]
        assert record.query_count == 1 + len(library)
        if order != "panel_only":
            # The toolbar's own store queries are not the page's.
            assert response["X-QueryLens-Queries"] == str(1 + len(library))
        content = panel_content(client, response)
        assert 'select_related("author")' in text(content)


def test_history_panel_reshows_an_earlier_request(
    client: Client, library: list[Book], settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    enable_toolbar(settings, monkeypatch)
    first = client.get("/fk_loop/")
    client.get("/fk_loop_fixed/")
    sidebar = client.get(
        reverse("djdt:history_sidebar"),
        {"request_id": toolbar_id(first), "exclude_history": "True"},
    ).json()
    button = sidebar["QueryLensPanel"]["button"]
    assert f"{1 + len(library)} queries · 1 N+1" in text(button)
    assert "ql-nav-warning" in button
    # The earlier request's content, after a newer one.
    assert 'select_related("author")' in text(panel_content(client, first))


def test_panels_rendered_inline(
    client: Client, library: list[Book], settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    enable_toolbar(settings, monkeypatch, RENDER_PANELS=True)
    html = client.get("/fk_loop/").content.decode()
    assert 'select_related("author")' in text(html)


# -- admin link and EXPLAIN -----------------------------------------------------------


def test_panel_links_open_nothing_without_querylens_permissions(
    client: Client, library: list[Book], settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The toolbar decides who sees the panel; the pages it links to hold
    # other users' traffic and decide for themselves.
    enable_toolbar(settings, monkeypatch, "toolbar_outside")
    client.force_login(User.objects.create_user("dev", password="x", is_staff=True))
    response = client.get("/fk_loop/")
    request_id = panel_stats(response)["record"]["id"]
    content = panel_content(client, response)
    detail = reverse("querylens:request", kwargs={"request_id": request_id})
    assert f'href="{detail}"' in content
    assert client.get(detail).status_code == 403
    assert client.get(detail + "?format=json").status_code == 403
    explain = reverse("querylens:explain", kwargs={"request_id": request_id, "index": 0})
    token = client.get(reverse("djdt:querylens_csrf")).json()
    answer = client.post(explain, {"csrfmiddlewaretoken": next(iter(token.values()))})
    assert answer.status_code == 403
    assert "tests_author" not in answer.content.decode()


@pytest.mark.parametrize("order", ["toolbar_outside", "panel_only"])
def test_stored_request_links_to_the_admin_detail(
    order: str,
    client: Client,
    library: list[Book],
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    enable_toolbar(settings, monkeypatch, order)
    client.force_login(querylens_staff("viewer"))
    response = client.get("/fk_loop/")
    request_id = panel_stats(response)["record"]["id"]
    content = panel_content(client, response)
    detail = reverse("querylens:request", kwargs={"request_id": request_id})
    assert f'href="{detail}"' in content
    explain = reverse("querylens:explain", kwargs={"request_id": request_id, "index": 0})
    assert f'data-url="{explain}"' in content
    assert reverse("djdt:querylens_csrf") in content
    # The link leads to this request's page in the admin.
    client.force_login(querylens_staff("staff"))
    page = client.get(detail)
    assert page.status_code == 200
    assert "tests.Book.author" in page.content.decode()


def test_request_missing_from_storage_has_no_admin_link(
    client: Client, library: list[Book], settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    enable_toolbar(settings, monkeypatch, "toolbar_outside")
    response = client.get("/fk_loop/")
    get_storage().clear()
    content = panel_content(client, response)
    assert "not in querylens's buffer" in text(content)
    assert "ql-explain-button" not in content
    assert "ql-detail" not in content


def test_csrf_endpoint_gives_a_token_explain_accepts(
    library: list[Book], settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    enable_toolbar(settings, monkeypatch, "toolbar_outside")
    client = Client(enforce_csrf_checks=True)
    client.force_login(querylens_staff("staff"))
    response = client.get("/fk_loop/")
    explain = reverse(
        "querylens:explain", kwargs={"request_id": response["X-QueryLens-Request"], "index": 0}
    )
    refused = client.post(explain + "?format=json")
    assert refused.status_code == 403
    token = client.get(reverse("djdt:querylens_csrf")).json()["token"]
    answer = client.post(explain + "?format=json", HTTP_X_CSRFTOKEN=token)
    assert answer.status_code == 200
    assert "plan_text" in answer.json()


def test_csrf_endpoint_is_hidden_when_the_toolbar_is(
    client: Client, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    enable_toolbar(settings, monkeypatch)
    url = reverse("djdt:querylens_csrf")
    assert client.get(url).status_code == 200
    settings.INTERNAL_IPS = []
    assert client.get(url).status_code == 404


# -- when querylens does not record -----------------------------------------------------


def test_disabled_querylens_says_so(
    client: Client, library: list[Book], settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    enable_toolbar(settings, monkeypatch, "panel_only")
    settings.QUERYLENS = {"ENABLED": False}
    response = client.get("/fk_loop/")
    assert sidebar_subtitle(response.content.decode()) == "off"
    assert 'QUERYLENS["ENABLED"] is False' in text(panel_content(client, response))
    assert get_storage().recent() == []


def test_analysis_error_leaves_the_page_alone(
    client: Client,
    library: list[Book],
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import querylens.lifecycle

    def explode(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("analysis bug")

    enable_toolbar(settings, monkeypatch, "panel_only")
    monkeypatch.setattr(querylens.lifecycle, "finish_request", explode)
    response = client.get("/fk_loop/")
    assert response.status_code == 200
    assert sidebar_subtitle(response.content.decode()) == "error"
    assert "failed to analyse" in text(panel_content(client, response))
    assert any("analysis bug" in (r.exc_text or "") for r in caplog.records)


def test_querylens_pages_are_shown_but_not_stored(
    client: Client, db: None, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    enable_toolbar(settings, monkeypatch, "panel_only")
    client.force_login(querylens_staff("staff"))
    response = client.get(reverse("querylens:requests"))
    assert response.status_code == 200
    assert panel_stats(response)["record"]["path"] == reverse("querylens:requests")
    assert get_storage().recent() == []


def test_excluded_path_is_not_recorded(
    client: Client, library: list[Book], settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    enable_toolbar(settings, monkeypatch, "panel_only")
    settings.QUERYLENS = {"EXCLUDE_PATHS": [r"^/fk_"]}
    response = client.get("/fk_loop/")
    assert sidebar_subtitle(response.content.decode()) == "off"
    assert "EXCLUDE_PATHS" in text(panel_content(client, response))
    assert get_storage().recent() == []


def test_without_querylens_urls_there_is_no_link_or_explain(
    client: Client, library: list[Book], settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    enable_toolbar(settings, monkeypatch, "panel_only", with_querylens_urls=False)
    response = client.get("/fk_loop/")
    content = panel_content(client, response)
    assert get_storage().recent()  # stored, but nowhere to show it
    assert 'select_related("author")' in text(content)
    assert "ql-explain-button" not in content
    assert "ql-detail" not in content


class BrokenStorage:
    def add(self, record: Any) -> None:
        raise OSError("storage down")

    def get(self, request_id: str) -> Any:
        raise OSError("storage down")


def test_storage_outage_leaves_page_and_panel_working(
    client: Client,
    library: list[Book],
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    enable_toolbar(settings, monkeypatch, "panel_only")
    settings.QUERYLENS = {"STORAGE": "tests.test_panel.BrokenStorage"}
    response = client.get("/fk_loop/")
    assert response.status_code == 200
    assert "1 N+1" in sidebar_subtitle(response.content.decode())
    content = panel_content(client, response)
    assert "not in querylens's buffer" in text(content)
    messages = [r.getMessage() for r in caplog.records if r.name == "querylens"]
    assert any("could not store" in m for m in messages)
    assert any("could not read storage" in m for m in messages)


def test_recording_that_cannot_start_leaves_the_page_alone(
    client: Client,
    library: list[Book],
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from querylens import lifecycle

    def broken(**kwargs: Any) -> Any:
        raise RuntimeError("recorder bug")

    enable_toolbar(settings, monkeypatch, "panel_only")
    monkeypatch.setattr(lifecycle, "start", broken)
    response = client.get("/fk_loop/")
    assert response.status_code == 200
    assert sidebar_subtitle(response.content.decode()) == "off"
    assert "could not start recording" in text(panel_content(client, response))
    assert any("recorder bug" in (r.exc_text or "") for r in caplog.records)


def csp_nonce_middleware(get_response: Callable[..., Any]) -> Callable[..., Any]:
    """Stands in for django-csp, which puts the nonce on the request."""

    def middleware(request: HttpRequest) -> Any:
        request.csp_nonce = "n0nce"  # type: ignore[attr-defined]
        return get_response(request)

    return middleware


def test_stylesheet_carries_the_csp_nonce(
    client: Client, library: list[Book], settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    enable_toolbar(settings, monkeypatch, "panel_only")
    settings.MIDDLEWARE = ["tests.test_panel.csp_nonce_middleware", *settings.MIDDLEWARE]
    html = client.get("/fk_loop/").content.decode()
    assert re.search(r'<link rel="stylesheet" href="[^"]*panel\.css" nonce="n0nce">', html)


def test_unreadable_stored_stats_show_an_error(
    client: Client, library: list[Book], settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from debug_toolbar.store import get_store

    enable_toolbar(settings, monkeypatch, "panel_only")
    response = client.get("/fk_loop/")
    # What an older querylens, or a hand-edited store, might have left.
    get_store().save_panel(toolbar_id(response), "QueryLensPanel", {"record": {"id": "x"}})
    assert "could not show this request" in text(panel_content(client, response))
    sidebar = client.get(
        reverse("djdt:history_sidebar"),
        {"request_id": toolbar_id(response), "exclude_history": "True"},
    ).json()
    assert text(sidebar["QueryLensPanel"]["button"]) == "querylens error"


@pytest.mark.parametrize("order", ["querylens_outside", "toolbar_outside"])
def test_server_timing_keeps_the_app_and_db_entries_in_both_orders(
    order: str, client: Client, library: list[Book], settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    enable_toolbar(settings, monkeypatch, order)
    settings.QUERYLENS = {"HEADERS": "always"}
    response = client.get("/server_timing/")
    entries = [entry.strip() for entry in response["Server-Timing"].split(",")]
    assert entries.count('app;dur=1.5;desc="view"') == 1, entries
    db = [entry for entry in entries if entry.startswith("db;")]
    assert db == [f'db;dur={response["X-QueryLens-Time"]};desc="1 query"'], entries
    # The toolbar's own entries are there too (its Timer panel).
    assert any(entry.startswith("TimerPanel_") for entry in entries), entries


def test_the_panel_marks_an_allowed_group_and_does_not_count_it(
    client: Client, library: list[Book], settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    enable_toolbar(settings, monkeypatch)
    settings.QUERYLENS = {"ALLOW": [{"relation": "tests.Book.author", "reason": "six rows"}]}
    response = client.get("/fk_loop/")
    assert sidebar_subtitle(response.content.decode()).startswith(
        f"{1 + len(library)} queries · 0 N+1"
    )
    assert "allowed: six rows" in text(panel_content(client, response))
