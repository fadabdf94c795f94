"""The admin pages in a real headless Chromium, against a live server.

Each test logs in through the admin login form like a person would, and
keeps screenshots in ``test-artifacts/`` (the docs' screenshots come from
here too).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from django.contrib.auth.models import User
from django.db import connection

from querylens.explain.plan import SLOW_STEP_MS
from querylens.storage import get_storage
from querylens.testing import recorded
from tests.factories import make_library
from tests.helpers import closes_connections, querylens_staff
from tests.models import Book

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = [pytest.mark.browser]

PASSWORD = "browser-pass-1"
VENDOR_NAMES = {"sqlite": "SQLite", "postgresql": "PostgreSQL", "mysql": "MariaDB"}


@pytest.fixture(autouse=True)
def empty_buffer() -> Iterator[None]:
    get_storage().clear()
    yield
    get_storage().clear()


@pytest.fixture
def staff(transactional_db: None) -> User:
    return querylens_staff("ada", PASSWORD)


def log_in(page: Page, base: str, next_url: str) -> None:
    page.goto(f"{base}/admin/login/?next={next_url}")
    page.fill("#id_username", "ada")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(f"{base}{next_url}*")


def shot(page: Page, artifacts_dir: Path, name: str) -> Path:
    path = artifacts_dir / f"admin-{name}.png"
    page.screenshot(path=path, full_page=True)
    return path


@closes_connections
def test_staff_finds_the_n_plus_one_and_explains_its_query(
    page: Page, live_server: Any, staff: User, artifacts_dir: Path
) -> None:
    make_library(authors=4, books_per_author=3)
    base = live_server.url
    page.set_viewport_size({"width": 1400, "height": 900})
    # Traffic to look at: two N+1s, a clean twin and duplicates.
    for url in ("/fk_loop/", "/fk_loop/", "/reverse_fk/", "/fk_loop_fixed/", "/duplicates/"):
        assert page.goto(base + url).status == 200

    log_in(page, base, "/admin/")
    # The admin index links to the pages.
    page.get_by_role("link", name="N+1 hotspots").first.click()
    page.wait_for_url(f"{base}/admin/querylens/")
    assert page.locator("h1").inner_text() == "N+1 hotspots"
    rows = page.locator("#n-plus-one tr.ql-hotspot")
    texts = rows.all_inner_texts()
    # Ranked by time saved, which the database decides: check the order the
    # page shows, not a guess of which N+1 was slower.
    saved_texts = rows.locator("td.ql-num strong").all_inner_texts()
    saved = [float(text.removesuffix(" ms")) for text in saved_texts]
    assert len(saved) == len(texts) >= 2
    assert saved == sorted(saved, reverse=True)
    (book_author,) = [i for i, text in enumerate(texts) if "tests.Book.author" in text]
    assert 'select_related("author")' in texts[book_author]
    assert any('prefetch_related("books")' in text for text in texts)
    assert page.locator("#ql-ranking rect.ql-n1").count() >= 2
    shot(page, artifacts_dir, "hotspots")

    rows.nth(book_author).get_by_role("link", name="Worst").click()
    page.wait_for_selector("#n-plus-one")
    crumbs = page.locator(".breadcrumbs")
    assert crumbs.inner_text().endswith("GET /fk_loop/")
    # Styled as the admin styles its own (Django 6.1 styles only <ol>):
    # the breadcrumb bar's colour, not the page's transparent default.
    got, wanted = crumbs.evaluate(
        """el => {
            const probe = document.createElement("div");
            probe.style.backgroundColor = "var(--breadcrumbs-bg)";
            document.body.appendChild(probe);
            const wanted = getComputedStyle(probe).backgroundColor;
            probe.remove();
            return [getComputedStyle(el).backgroundColor, wanted];
        }"""
    )
    assert wanted not in ("", "rgba(0, 0, 0, 0)", "transparent")
    assert got == wanted
    group = page.locator("#n1-1").inner_text()
    assert "12 queries" in group.replace("\n", " ")
    assert "tests/views.py" in group
    assert page.locator("#ql-waterfall rect.ql-n1").count() == 12
    # The user stack opens on demand.
    stack = page.locator(".ql-query.ql-n1 details").first
    assert not stack.evaluate("el => el.open")
    stack.locator("summary").click()
    assert stack.evaluate("el => el.open")
    assert "fk_loop" in stack.inner_text()
    shot(page, artifacts_dir, "request")

    page.locator(".ql-query.ql-n1").first.get_by_role("button", name="EXPLAIN").click()
    page.wait_for_selector("#ql-explain-meta")
    meta = page.locator("#ql-explain-meta").inner_text()
    assert meta.startswith(VENDOR_NAMES[connection.vendor])
    assert ("not analyzed" in meta) == (connection.vendor == "sqlite")
    assert "tests_author" in page.locator("#ql-plan").inner_text()
    shot(page, artifacts_dir, "explain-sqlite")


@closes_connections
def test_request_list_filters_by_path_and_n_plus_one(
    page: Page, live_server: Any, staff: User, artifacts_dir: Path
) -> None:
    make_library()
    base = live_server.url
    for url in ("/fk_loop/", "/fk_loop_fixed/", "/m2m/", "/json_ok/"):
        page.goto(base + url)
    log_in(page, base, "/admin/querylens/requests/")
    rows = page.locator("#ql-requests tbody tr")
    # Newest first; the login page and the browser's favicon request are
    # recorded too, the querylens pages are not.
    paths = [re.search(r"\s(/\S*)", text).group(1) for text in rows.all_inner_texts()]
    traffic = [path for path in paths if not path.startswith(("/admin/", "/favicon"))]
    assert traffic == ["/json_ok/", "/m2m/", "/fk_loop_fixed/", "/fk_loop/"]
    assert not [path for path in paths if path.startswith("/admin/querylens/")]

    page.get_by_label("has an N+1").check()
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(re.compile(r".*n_plus_one=1.*"))
    paths = [re.search(r"\s(/\S*)", text).group(1) for text in rows.all_inner_texts()]
    assert paths == ["/m2m/", "/fk_loop/"]

    page.fill("#ql-path", "M2M")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(re.compile(r".*path=M2M.*"))
    assert rows.count() == 1
    assert "/m2m/" in rows.first.inner_text()
    shot(page, artifacts_dir, "requests")


@closes_connections
def test_dark_mode_keeps_the_pages_readable(
    browser: Any, live_server: Any, staff: User, artifacts_dir: Path
) -> None:
    make_library()
    context = browser.new_context(color_scheme="dark", viewport={"width": 1400, "height": 900})
    page = context.new_page()
    try:
        base = live_server.url
        page.goto(base + "/fk_loop/")
        log_in(page, base, "/admin/querylens/")
        body = page.evaluate("getComputedStyle(document.body).backgroundColor")
        keyword = page.evaluate(
            "getComputedStyle(document.querySelector('#n-plus-one .ql-code')).color"
        )
        assert body == "rgb(18, 18, 18)"  # the admin's dark --body-bg
        assert keyword != "rgb(0, 0, 0)"
        page.locator("#n-plus-one tr.ql-hotspot").first.get_by_role("link", name="Newest").click()
        page.wait_for_selector("#queries")
        keyword_color = page.evaluate(
            "getComputedStyle(document.querySelector('#queries .ql-sql .k')).color"
        )
        assert keyword_color == "rgb(121, 184, 255)"  # the dark keyword colour
        shot(page, artifacts_dir, "request-dark")
    finally:
        context.close()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, databases=["default", "postgres"])
@closes_connections
def test_explain_analyze_on_postgres_shows_the_tree(
    page: Page, live_server: Any, artifacts_dir: Path
) -> None:
    querylens_staff("ada", PASSWORD)
    make_library(authors=3, books_per_author=2, using="postgres")
    with recorded() as result:
        books = Book.objects.using("postgres").select_related("publisher").order_by("title")
        for book in books:
            book.author.name  # noqa: B018 - the lazy load is the point
    record = dataclasses.replace(result.record, id="browserpostgres1", method="GET", path="/books/")
    get_storage().add(record)
    base = live_server.url
    page.set_viewport_size({"width": 1400, "height": 900})
    log_in(page, base, f"/admin/querylens/requests/{record.id}/")
    assert "tests.Book.author" in page.locator("#n1-1").inner_text()
    # The list query: a join and a sort, a tree worth reading.
    page.locator("#q-0").get_by_role("button", name="EXPLAIN").click()
    page.wait_for_selector("#ql-plan")
    meta = page.locator("#ql-explain-meta").inner_text()
    assert "PostgreSQL" in meta
    assert "ANALYZE" in meta
    assert "read-only" in meta
    plan = page.locator("#ql-plan").inner_text()
    assert "Sort" in plan
    assert "Join" in plan or "Nested Loop" in plan
    assert "tests_publisher" in plan
    # The slowest step is highlighted only when it takes 1 ms or more (a
    # 0.05 ms step is nothing to act on): read the self times the page shows.
    self_times = [
        float(text.removesuffix(" ms"))
        for text in page.locator("#ql-plan tbody tr td:last-child").all_inner_texts()
        if text.endswith(" ms")
    ]
    assert self_times
    expected = 1 if max(self_times) >= SLOW_STEP_MS else 0
    assert page.locator("#ql-plan tr.ql-slowest").count() == expected
    assert "Execution Time" in (page.locator("#ql-plan-text").text_content() or "")
    shot(page, artifacts_dir, "explain-postgres")
