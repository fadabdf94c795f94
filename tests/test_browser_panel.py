"""The toolbar panel in a real headless Chromium, against a live server.

A staff user logs in through the admin, opens a page with an N+1, opens the
querylens panel in django-debug-toolbar and runs EXPLAIN from it. The
screenshots stay in ``test-artifacts/``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from django.contrib.staticfiles.handlers import StaticFilesHandler
from django.db import connections
from django.test.testcases import LiveServerThread

from querylens.storage import get_storage
from tests.factories import make_library
from tests.helpers import VIEWS_FILE, closes_connections, line_of, querylens_staff
from tests.test_panel import enable_toolbar

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = [pytest.mark.browser]

PASSWORD = "panel-pass-1"


@pytest.fixture(autouse=True)
def empty_buffer() -> Iterator[None]:
    get_storage().clear()
    yield
    get_storage().clear()


@pytest.fixture
def base(settings: Any, monkeypatch: pytest.MonkeyPatch, transactional_db: None) -> Iterator[str]:
    """A live server started with the toolbar on; its URL.

    pytest-django's ``live_server`` loads the middleware once per session,
    before any test can add the toolbar's, so this one is started here. Tests
    ask for it before ``page`` so that the browser is gone when it stops.
    """
    # The toolbar outside QueryLensMiddleware: the panel shows the record the
    # middleware stored, so the admin link and EXPLAIN have a request to use.
    enable_toolbar(settings, monkeypatch, "toolbar_outside")
    querylens_staff("grace", PASSWORD)
    shared = {}
    for connection in connections.all():
        # An in-memory SQLite database exists only on this connection.
        if connection.vendor == "sqlite" and connection.is_in_memory_db():
            connection.inc_thread_sharing()
            shared[connection.alias] = connection
    server = LiveServerThread("localhost", StaticFilesHandler, connections_override=shared)
    server.daemon = True
    server.start()
    server.is_ready.wait()
    try:
        if server.error:
            raise server.error
        yield f"http://localhost:{server.port}"
    finally:
        server.terminate()
        for connection in shared.values():
            connection.dec_thread_sharing()


def log_in(page: Page, base: str) -> None:
    page.goto(f"{base}/admin/login/?next=/admin/")
    page.fill("#id_username", "grace")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(f"{base}/admin/")


def open_panel(page: Page) -> None:
    # Playwright's CSS selectors pierce the toolbar's (open) shadow root.
    page.locator("#djdt-QueryLensPanel a").click()
    page.locator("#QueryLensPanel .ql-panel").wait_for()


@closes_connections
def test_open_panel_shows_the_n_plus_one_and_explains_it(
    base: str, page: Page, artifacts_dir: Path
) -> None:
    make_library(authors=4, books_per_author=3)
    page.set_viewport_size({"width": 1400, "height": 900})
    log_in(page, base)

    assert page.goto(f"{base}/fk_loop/").status == 200
    # 13 on SQLite and PostgreSQL; MariaDB may add its connection set-up.
    (record,) = [r for r in get_storage().recent() if r.path == "/fk_loop/"]
    total = record.query_count
    assert total >= 13
    nav = page.locator("#djdt-QueryLensPanel")
    assert f"{total} queries · 1 N+1 ·" in nav.inner_text()
    warning = nav.locator(".ql-nav-warning")
    # panel.css (linked from the subtitle) colours it before the panel opens.
    assert warning.evaluate("el => getComputedStyle(el).color") == "rgb(255, 138, 101)"
    from debug_toolbar.panels import Panel

    if hasattr(Panel, "nav_icon"):  # sidebar icons came with django-debug-toolbar 8
        assert nav.locator("svg.djdt-nav-icon circle[fill='#e5533d']").count() == 1

    open_panel(page)
    panel = page.locator("#QueryLensPanel")
    assert panel.locator("h3").inner_text() == f"querylens: 1 N+1 in {total} queries"
    group = panel.locator("tr.ql-n-plus-one")
    assert f"{VIEWS_FILE}:{line_of('fk_loop')}" in group.inner_text()
    assert 'select_related("author")' in group.inner_text()
    assert panel.locator("table.ql-queries tbody tr").count() == total
    # Pygments colours apply (the toolbar's own .highlight theme).
    keyword = panel.locator("table.ql-queries pre.highlight .k").first
    assert keyword.evaluate("el => getComputedStyle(el).fontWeight") == "700"
    page.screenshot(path=artifacts_dir / "panel-n-plus-one.png")

    group.locator(".ql-explain-button").click()
    plan = group.locator(".ql-explain-output pre")
    plan.wait_for()
    assert "tests_author" in plan.inner_text() or "SCAN" in plan.inner_text()
    assert "EXPLAIN" in group.locator(".ql-explain-output").inner_text()
    page.screenshot(path=artifacts_dir / "panel-explain.png")
    panel.locator("h4", has_text="All queries").evaluate("el => el.scrollIntoView()")
    page.screenshot(path=artifacts_dir / "panel-all-queries.png")

    # The admin link opens this very request.
    detail = panel.locator("a.ql-detail")
    href = detail.get_attribute("href")
    assert href is not None
    assert page.goto(base + href).status == 200
    assert "tests.Book.author" in page.content()


@closes_connections
def test_clean_page_and_dark_theme(base: str, page: Page, artifacts_dir: Path) -> None:
    make_library()
    page.set_viewport_size({"width": 1400, "height": 900})
    page.emulate_media(color_scheme="dark")
    assert page.goto(f"{base}/fk_loop_fixed/").status == 200
    (record,) = [r for r in get_storage().recent() if r.path == "/fk_loop_fixed/"]
    total = record.query_count  # 1, or 2 with MariaDB's connection set-up
    assert [q for q in record.queries if "tests_book" in q.sql] == record.queries[-1:]
    nav = page.locator("#djdt-QueryLensPanel")
    expected = "1 query" if total == 1 else f"{total} queries"
    assert f"{expected} · 0 N+1 ·" in nav.inner_text()
    assert nav.locator(".ql-nav-warning").count() == 0
    open_panel(page)
    panel = page.locator("#QueryLensPanel")
    assert "No N+1 queries on this page." in panel.inner_text()
    page.screenshot(path=artifacts_dir / "panel-clean-dark.png")
