"""The admin pages through the test client: who may see them and what they show."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth.models import User
from django.db import connection, transaction
from django.test import Client, override_settings
from django.urls import include, path, reverse

from querylens.records import RequestRecord
from querylens.storage import BaseStorage, StorageError, get_storage
from querylens.testing import recorded
from tests.factories import make_library
from tests.helpers import latest_record, line_of, querylens_staff
from tests.models import Book, Tag

HOTSPOTS = "/admin/querylens/"
REQUESTS = "/admin/querylens/requests/"


def detail_url(request_id: str) -> str:
    return f"/admin/querylens/requests/{request_id}/"


def explain_url(request_id: str, index: int) -> str:
    return f"/admin/querylens/requests/{request_id}/queries/{index}/explain/"


@pytest.fixture(autouse=True)
def empty_buffer() -> Iterator[None]:
    get_storage().clear()
    yield
    get_storage().clear()


@pytest.fixture
def library(db: None) -> list[Book]:
    return make_library(authors=3, books_per_author=2)


@pytest.fixture
def staff_client(db: None) -> Client:
    client = Client()
    client.force_login(querylens_staff("staff"))
    return client


def visit(url: str) -> RequestRecord:
    """The stored record of an anonymous visit to one of the test views."""
    Client().get(url)
    return latest_record()


def store(record: RequestRecord, request_id: str, **changes: Any) -> RequestRecord:
    record = dataclasses.replace(record, id=request_id, **changes)
    get_storage().add(record)
    return record


def csrf_token(client: Client, url: str) -> str:
    html = client.get(url).content.decode()
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html)
    assert match, "no CSRF token on the page"
    return match.group(1)


# --- who may see the pages -------------------------------------------------------------


def page_requests(record: RequestRecord) -> list[tuple[str, str]]:
    return [
        ("get", HOTSPOTS),
        ("get", REQUESTS),
        ("get", detail_url(record.id)),
        ("get", detail_url(record.id) + "?format=json"),
        ("post", explain_url(record.id, 0)),
        ("post", explain_url(record.id, 0) + "?format=json"),
    ]


@pytest.mark.django_db
def test_anonymous_users_are_sent_to_the_admin_login(library: list[Book]) -> None:
    record = visit("/fk_loop/")
    for method, url in page_requests(record):
        response = getattr(Client(), method)(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith("/admin/login/?next=/admin/querylens/"), url


@pytest.mark.django_db
@pytest.mark.parametrize(
    "flags",
    [{"is_staff": False}, {"is_staff": False, "is_superuser": True}],
)
def test_logged_in_non_staff_users_get_403_and_no_data(
    library: list[Book], flags: dict[str, bool]
) -> None:
    record = visit("/fk_loop/")
    client = Client()
    client.force_login(User.objects.create_user("reader", password="x", **flags))
    for method, url in page_requests(record):
        response = getattr(client, method)(url)
        assert response.status_code == 403, url
        body = response.content.decode()
        assert "fk_loop" not in body
        assert "tests_author" not in body


@pytest.mark.django_db
def test_inactive_staff_gets_no_data(library: list[Book]) -> None:
    record = visit("/fk_loop/")
    client = Client()
    client.force_login(
        User.objects.create_user("former", password="x", is_staff=True, is_active=False)
    )
    for method, url in page_requests(record):
        response = getattr(client, method)(url)
        assert response.status_code in (302, 403), url
        assert "tests_author" not in response.content.decode()


@pytest.mark.django_db
def test_staff_sees_every_page(library: list[Book], staff_client: Client) -> None:
    record = visit("/fk_loop/")
    token = csrf_token(staff_client, detail_url(record.id))
    for method, url in page_requests(record):
        data = {"csrfmiddlewaretoken": token} if method == "post" else None
        response = getattr(staff_client, method)(url, data)
        assert response.status_code == 200, url


def _client_of(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.django_db
def test_staff_without_querylens_permissions_gets_403_and_no_data(library: list[Book]) -> None:
    record = visit("/fk_loop/")
    client = _client_of(User.objects.create_user("staff", password="x", is_staff=True))
    token = csrf_token(_client_of(querylens_staff("owner")), detail_url(record.id))
    for method, url in page_requests(record):
        data = {"csrfmiddlewaretoken": token} if method == "post" else None
        response = getattr(client, method)(url, data)
        assert response.status_code == 403, url
        assert "tests_author" not in response.content.decode(), url
    # Nor does the admin index offer the pages.
    assert "/admin/querylens/" not in client.get("/admin/").content.decode()
    assert client.get("/admin/querylens/hotspotspage/").status_code == 403


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("perms", "opens"),
    [
        (("querylens.view_hotspotspage",), {HOTSPOTS}),
        (("querylens.view_requestspage",), {"requests", "request", "json"}),
        (("querylens.explain_query",), set()),
        (
            ("querylens.view_requestspage", "querylens.explain_query"),
            {"requests", "request", "json", "explain"},
        ),
    ],
)
def test_each_permission_opens_its_pages_only(
    library: list[Book], perms: tuple[str, ...], opens: set[str]
) -> None:
    record = visit("/fk_loop/")
    client = _client_of(querylens_staff("reader", perms=perms))
    token = csrf_token(_client_of(querylens_staff("owner")), detail_url(record.id))
    names = {
        HOTSPOTS: HOTSPOTS,
        REQUESTS: "requests",
        detail_url(record.id): "request",
        detail_url(record.id) + "?format=json": "json",
        explain_url(record.id, 0): "explain",
        explain_url(record.id, 0) + "?format=json": "explain",
    }
    for method, url in page_requests(record):
        data = {"csrfmiddlewaretoken": token} if method == "post" else None
        response = getattr(client, method)(url, data)
        expected = 200 if names[url] in opens else 403
        assert response.status_code == expected, (url, response.status_code)


@pytest.mark.django_db
def test_permissions_granted_through_a_group_work(library: list[Book]) -> None:
    from django.contrib.auth.models import Group, Permission

    record = visit("/fk_loop/")
    group = Group.objects.create(name="performance")
    group.permissions.set(Permission.objects.filter(content_type__app_label="querylens"))
    user = User.objects.create_user("member", password="x", is_staff=True)
    user.groups.add(group)
    client = _client_of(user)
    assert client.get(detail_url(record.id) + "?format=json").json()["id"] == record.id
    html = client.get("/admin/").content.decode()
    assert '<a href="/admin/querylens/requestspage/"' in html


@pytest.mark.django_db
def test_superuser_staff_sees_every_page(library: list[Book]) -> None:
    record = visit("/fk_loop/")
    client = _client_of(
        User.objects.create_superuser("root", password="x", email="root@example.com")
    )
    token = csrf_token(client, detail_url(record.id))
    for method, url in page_requests(record):
        data = {"csrfmiddlewaretoken": token} if method == "post" else None
        assert getattr(client, method)(url, data).status_code == 200, url


@pytest.mark.django_db
def test_our_own_pages_are_not_recorded(library: list[Book], staff_client: Client) -> None:
    record = visit("/fk_loop/")
    for method, url in page_requests(record):
        response = getattr(staff_client, method)(url)
        assert "X-QueryLens-Request" not in response
    assert [r.path for r in get_storage().recent()] == ["/fk_loop/"]


# --- the admin index links here -----------------------------------------------------------


@pytest.mark.django_db
def test_admin_index_lists_the_pages_for_staff(staff_client: Client) -> None:
    html = staff_client.get("/admin/").content.decode()
    assert re.search(r'<a href="/admin/querylens/hotspotspage/"[^>]*>N\+1 hotspots</a>', html)
    assert re.search(r'<a href="/admin/querylens/requestspage/"[^>]*>Recorded requests</a>', html)
    response = staff_client.get("/admin/querylens/hotspotspage/")
    assert response.status_code == 302
    assert response["Location"] == HOTSPOTS
    assert staff_client.get("/admin/querylens/requestspage/")["Location"] == REQUESTS


@pytest.mark.django_db
def test_admin_entries_only_open_pages_no_add_or_change(staff_client: Client) -> None:
    html = staff_client.get("/admin/").content.decode()
    assert "/admin/querylens/hotspotspage/add/" not in html
    assert staff_client.get("/admin/querylens/hotspotspage/add/").status_code == 404


def urlconf(*patterns: Any) -> ModuleType:
    """A project's URL module holding only ``patterns``."""
    module = ModuleType("project_urls")
    module.urlpatterns = list(patterns)  # type: ignore[attr-defined]
    return module


@pytest.mark.django_db
def test_admin_entry_without_our_urls_says_how_to_include_them(staff_client: Client) -> None:
    forgot_querylens = urlconf(path("admin/", admin.site.urls))
    with override_settings(ROOT_URLCONF=forgot_querylens, DEBUG=True):
        response = staff_client.get("/admin/querylens/hotspotspage/")
    assert response.status_code == 404
    assert "include(&quot;querylens.urls&quot;)" in response.content.decode()


def test_without_the_admin_login_anonymous_users_go_to_login_url() -> None:
    pages_only = urlconf(path("ql/", include("querylens.urls")))
    with override_settings(ROOT_URLCONF=pages_only, LOGIN_URL="/accounts/login/"):
        response = Client().get("/ql/")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=/ql/"


# --- hotspots ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_hotspots_rank_the_n_plus_ones_with_their_fix(
    library: list[Book], staff_client: Client
) -> None:
    for url in ("/fk_loop/", "/fk_loop/", "/reverse_fk/", "/fk_loop_fixed/", "/duplicates/"):
        Client().get(url)
    response = staff_client.get(HOTSPOTS)
    html = response.content.decode()
    assert response.status_code == 200
    assert "<h1>N+1 hotspots</h1>" in html
    assert "Across the 5 requests in the buffer" in html
    rows = re.findall(
        r'<tr id="hotspot-\w+" class="ql-hotspot" data-kind="(\w+)">(.*?)</tr>', html, re.S
    )
    assert [kind for kind, _ in rows] == ["n_plus_one", "n_plus_one", "duplicate"]
    fk_row = next(row for _, row in rows if "tests.Book.author" in row)
    assert "select_related(&quot;author&quot;)" in fk_row
    assert f"tests/views.py:{line_of('fk_loop')}" in fk_row
    assert (
        '<span class="ql-occurrences">12</span><br><span class="ql-quiet">in 2 requests</span>'
        in fk_row
    )
    assert "tests.views.fk_loop" in fk_row
    assert "prefetch_related(&quot;books&quot;)" in html
    assert f"tests/views.py:{line_of('dup_first')}" in html
    # The bar picture: one bar per hotspot, N+1s in their colour.
    start = html.index('<svg class="ql-chart" id="ql-ranking"')
    chart = html[start : html.index("</svg>", start)]
    assert chart.count('class="ql-n1"') == 2
    assert chart.count('class="ql-dup"') == 1
    assert f"1. tests.Book.author at tests/views.py:{line_of('fk_loop')}" in chart


@pytest.mark.django_db
def test_hotspots_show_the_projects_n_plus_ones_apart_from_the_packages(
    library: list[Book], staff_client: Client
) -> None:
    import dataclasses

    from querylens.storage import get_storage
    from tests.helpers import latest_record

    Client().get("/fk_loop/")
    own = latest_record()
    # The same request as if a CMS's own code had run a loop too.
    inside = dataclasses.replace(
        own.n_plus_one[0], fingerprint="fp-cms", callsite=None, package="wagtail", total_ms=99.0
    )
    get_storage().add(
        dataclasses.replace(own, id="cms-request-1", n_plus_one=[*own.n_plus_one, inside])
    )
    html = staff_client.get(HOTSPOTS).content.decode()
    project = html[html.index('id="n-plus-one"') : html.index('id="n-plus-one-packages"')]
    packages = html[html.index('id="n-plus-one-packages"') : html.index('id="duplicates"')]
    assert "tests.Book.author" in project
    assert "inside wagtail" not in project
    assert "inside wagtail" in packages
    assert f"tests/views.py:{line_of('fk_loop')}" not in packages
    # Ranked lower although it wastes more time: the first bar is the project's.
    chart = html[html.index('<svg class="ql-chart"') :]
    assert f"1. tests.Book.author at tests/views.py:{line_of('fk_loop')}" in chart


@pytest.mark.django_db
def test_hotspots_links_open_the_worst_request_at_its_first_query(
    library: list[Book], staff_client: Client
) -> None:
    record = visit("/fk_loop/")
    html = staff_client.get(HOTSPOTS).content.decode()
    first = record.n_plus_one[0].query_indexes[0]
    assert f'href="{detail_url(record.id)}?page=1#q-{first}" class="ql-worst"' in html


@pytest.mark.django_db
def test_empty_buffer_says_so(staff_client: Client) -> None:
    html = staff_client.get(HOTSPOTS).content.decode()
    assert "No request has been recorded yet." in html
    assert "No request has been recorded yet." in staff_client.get(REQUESTS).content.decode()


# --- requests -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_requests_are_listed_newest_first_with_their_numbers(
    library: list[Book], staff_client: Client
) -> None:
    visit("/fk_loop/")
    clean = visit("/fk_loop_fixed/")
    html = staff_client.get(REQUESTS).content.decode()
    rows = re.findall(r"<tr>\s*<td class=\"ql-nowrap\">.*?</tr>", html, re.S)
    assert len(rows) == 2
    assert "/fk_loop_fixed/" in rows[0]
    assert "/fk_loop/" in rows[1]
    assert f'href="{detail_url(clean.id)}"' in rows[0]
    assert "tests.views.fk_loop_fixed" in rows[0]
    assert '<span class="ql-badge ql-n1">1</span>' in rows[1]
    assert f'<td class="ql-num">{clean.query_count}</td>' in rows[0]


@pytest.mark.django_db
def test_requests_filter_by_path_and_by_n_plus_one(
    library: list[Book], staff_client: Client
) -> None:
    for url in ("/fk_loop/", "/fk_loop_fixed/", "/m2m/", "/m2m_fixed/"):
        visit(url)

    def paths(query: str) -> list[str]:
        html = staff_client.get(REQUESTS + query).content.decode()
        return re.findall(r'<span class="ql-code">(/[^<]*)</span></a>', html)

    assert paths("?path=m2m") == ["/m2m_fixed/", "/m2m/"]
    assert paths("?n_plus_one=1") == ["/m2m/", "/fk_loop/"]
    assert paths("?path=FK&n_plus_one=1") == ["/fk_loop/"]
    assert paths("?path=nothing-like-this") == []
    html = staff_client.get(REQUESTS + "?path=FK&n_plus_one=1").content.decode()
    assert 'value="FK"' in html
    assert "checked" in html


@pytest.mark.django_db
def test_requests_are_paginated(staff_client: Client) -> None:
    base = visit("/no_queries/")
    for number in range(60):
        store(base, f"request-{number:03d}", path=f"/p{number:03d}/")
    first = staff_client.get(REQUESTS).content.decode()
    assert first.count('<td class="ql-nowrap">') == 50
    assert "Page 1 of 2" in first
    assert "/p059/" in first
    second = staff_client.get(REQUESTS + "?page=2").content.decode()
    assert second.count('<td class="ql-nowrap">') == 11
    assert "/p000/" in second
    # Nonsense pages fall back to a real page instead of failing.
    assert staff_client.get(REQUESTS + "?page=abc").status_code == 200
    assert "Page 2 of 2" in staff_client.get(REQUESTS + "?page=999").content.decode()


# --- one request ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_request_page_shows_groups_first_then_every_query(
    library: list[Book], staff_client: Client
) -> None:
    record = visit("/fk_loop/")
    html = staff_client.get(detail_url(record.id)).content.decode()
    assert html.index('id="n-plus-one"') < html.index('id="timeline"') < html.index('id="queries"')
    group = html[html.index('id="n1-1"') : html.index("</tr>", html.index('id="n1-1"'))]
    assert "tests.Book.author" in group
    assert "select_related(&quot;author&quot;)" in group
    assert f"tests/views.py:{line_of('fk_loop')}" in group
    assert '<span class="k">SELECT</span>' in group  # highlighted sample SQL
    assert html.count('class="ql-query ') == len(record.queries)
    # Every query: SQL highlighted, params, duration, call site, a collapsible stack.
    query = record.queries[1]
    block = html[html.index(f'id="q-{query.index}"') :]
    assert f"{query.duration_ms:.3f} ms" in block[:2000]
    assert f'Params: <span class="ql-code">[{query.params[0]}]</span>' in block[:4000]
    assert "<details>" in block[:4000]
    # The duplicates the N+1 explains are part of its row, not rows of their own.
    repeats = record.repeats_in_n_plus_one()[1]
    assert repeats == record.duplicate_count == 3
    assert "3 of them repeat an earlier query exactly" in group
    assert 'id="dup-' not in html
    assert "(3 in N+1 groups)" in html


@pytest.mark.django_db
def test_request_page_draws_a_waterfall_of_the_queries(
    library: list[Book], staff_client: Client
) -> None:
    record = visit("/fk_loop/")
    html = staff_client.get(detail_url(record.id)).content.decode()
    svg = html[
        html.index('<svg class="ql-chart" id="ql-waterfall"') : html.index(
            "</svg>", html.index("ql-waterfall")
        )
    ]
    bars = re.findall(r'<a href="#q-(\d+)"><rect class="(ql-\w+)" x="([\d.]+)"', svg)
    assert [int(index) for index, _, _ in bars] == [q.index for q in record.queries]
    n1 = set(record.n_plus_one[0].query_indexes)
    assert {int(i) for i, css, _ in bars if css == "ql-n1"} == n1
    xs = [float(x) for _, _, x in bars]
    assert xs == sorted(xs)  # queries start one after another


@pytest.mark.django_db
def test_request_page_has_an_explain_form_per_query(
    library: list[Book], staff_client: Client
) -> None:
    record = visit("/fk_loop/")
    html = staff_client.get(detail_url(record.id)).content.decode()
    forms = re.findall(
        r'<form method="post" action="([^"]+)"><input type="hidden" name="csrfmiddlewaretoken"',
        html,
    )
    assert forms == [explain_url(record.id, q.index) for q in record.queries]


@pytest.mark.django_db
def test_request_json_is_exactly_the_record(library: list[Book], staff_client: Client) -> None:
    record = visit("/fk_loop/")
    response = staff_client.get(detail_url(record.id) + "?format=json")
    assert response["Content-Type"] == "application/json"
    assert response.json() == record.to_dict()
    assert RequestRecord.from_dict(response.json()) == record


@pytest.mark.django_db
def test_a_big_request_pages_its_queries(staff_client: Client) -> None:
    with recorded() as result, connection.cursor() as cursor:
        for number in range(250):
            cursor.execute("SELECT %s", [number])  # the same line: one N+1 group
    record = store(result.record, "big-request-1")
    page1 = staff_client.get(detail_url(record.id)).content.decode()
    assert page1.count('class="ql-query ') == 100
    assert page1.count("<rect class=") == 100
    assert "Page 1 of 3 (1\N{EN DASH}100 of 250 queries)" in page1
    # Group links reach queries on later pages.
    assert 'href="?page=1#q-0"' in page1
    page3 = staff_client.get(detail_url(record.id) + "?page=3").content.decode()
    assert page3.count('class="ql-query ') == 50
    assert 'id="q-249"' in page3
    assert 'id="q-0"' not in page3


@pytest.mark.django_db
def test_truncated_requests_say_how_many_queries_were_not_kept(
    library: list[Book], staff_client: Client
) -> None:
    with override_settings(QUERYLENS={"MAX_QUERIES_PER_REQUEST": 3}):
        record = visit("/fk_loop/")
    html = staff_client.get(detail_url(record.id)).content.decode()
    assert f"{record.truncated} more queries ran but were not stored" in html


@pytest.mark.django_db
@pytest.mark.parametrize(
    "request_id", ["no-such-request", "bad$id", "a" * 65, "%3Cscript%3E", "..", "x y"]
)
def test_unknown_or_malformed_request_ids_are_404(staff_client: Client, request_id: str) -> None:
    assert staff_client.get(detail_url(request_id)).status_code == 404
    assert staff_client.get(detail_url(request_id) + "?format=json").status_code == 404
    assert staff_client.post(explain_url(request_id, 0)).status_code == 404


# --- everything is escaped -----------------------------------------------------------------


@pytest.mark.django_db
def test_recorded_script_tags_show_as_text(staff_client: Client) -> None:
    with recorded() as result, connection.cursor() as cursor:
        cursor.execute("SELECT '<script>alert(1)</script>' AS x, %s", ["<script>alert(2)</script>"])
    record = store(
        result.record, "script-request", path="/<script>alert(3)</script>/", view="<b>v</b>"
    )
    get_storage().add(dataclasses.replace(record, id="script-other", path="/x/"))
    pages = [
        staff_client.get(HOTSPOTS),
        staff_client.get(REQUESTS),
        staff_client.get(detail_url(record.id)),
        staff_client.post(explain_url(record.id, 0)),
    ]
    for response in pages:
        html = response.content.decode()
        assert response.status_code == 200
        assert "<script>alert" not in html
        assert "<b>v</b>" not in html
    detail = pages[2].content.decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in detail
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in detail
    assert "/&lt;script&gt;alert(3)&lt;/script&gt;/" in detail
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in pages[3].content.decode()


# --- EXPLAIN ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_explain_is_post_only(library: list[Book], staff_client: Client) -> None:
    record = visit("/fk_loop/")
    response = staff_client.get(explain_url(record.id, 0))
    assert response.status_code == 405
    assert response["Allow"] == "POST"


@pytest.mark.django_db
def test_explain_needs_the_csrf_token(library: list[Book]) -> None:
    record = visit("/fk_loop/")
    client = Client(enforce_csrf_checks=True)
    client.force_login(querylens_staff("staff"))
    refused = client.post(explain_url(record.id, 0))
    assert refused.status_code == 403
    assert "CSRF" in refused.content.decode()
    token = csrf_token(client, detail_url(record.id))
    response = client.post(explain_url(record.id, 1), {"csrfmiddlewaretoken": token})
    assert response.status_code == 200
    html = response.content.decode()
    assert "<h1>EXPLAIN of query #1</h1>" in html
    plan = html[html.index('id="ql-plan"') :]
    assert "tests_author" in plan[: plan.index("</table>")]


@pytest.mark.django_db
@pytest.mark.parametrize("index", ["999", "-1", "abc", "1" * 30])
def test_unknown_or_malformed_query_indexes_are_404(
    library: list[Book], staff_client: Client, index: str
) -> None:
    record = visit("/fk_loop/")
    url = f"/admin/querylens/requests/{record.id}/queries/{index}/explain/"
    assert staff_client.post(url).status_code == 404
    assert staff_client.post(url + "?format=json").status_code == 404


@pytest.mark.django_db
def test_explain_json_has_the_documented_shape(library: list[Book], staff_client: Client) -> None:
    record = visit("/fk_loop/")
    response = staff_client.post(explain_url(record.id, 0) + "?format=json")
    assert response.status_code == 200
    data = response.json()
    assert {"vendor", "analyzed", "plan_text", "plan", "warnings"} <= set(data)
    assert data["error"] is None
    assert "tests_book" in data["plan_text"]
    assert isinstance(data["warnings"], list)
    if connection.vendor == "sqlite":
        assert (data["vendor"], data["analyzed"]) == ("sqlite", False)
        assert data["plan_text"] == "QUERY PLAN\n`--SCAN tests_book"
        assert data["plan"]["children"][0]["label"] == "SCAN tests_book"
    else:
        assert data["analyzed"] is True

        def actual_rows(node: dict[str, Any]) -> list[Any]:
            return [node["actual_rows"], *(r for c in node["children"] for r in actual_rows(c))]

        assert any(rows is not None for rows in actual_rows(data["plan"]))


@pytest.mark.django_db
def test_a_recorded_write_is_not_analyzed_and_the_row_stays(
    library: list[Book], staff_client: Client
) -> None:
    book = library[0]

    def update() -> None:
        with transaction.atomic():
            Book.objects.filter(pk=book.pk).update(title="changed")
            transaction.set_rollback(True)

    with recorded() as result:
        update()
    record = store(result.record, "write-request")
    [update_query] = [q for q in record.queries if q.sql.startswith("UPDATE")]
    html = staff_client.post(explain_url(record.id, update_query.index)).content.decode()
    assert "Not analyzed. UPDATE statements are explained without ANALYZE" in html
    book.refresh_from_db()
    assert book.title == "Book 0.0"


@pytest.mark.django_db
def test_executemany_is_refused_with_a_message(library: list[Book], staff_client: Client) -> None:
    record = visit("/executemany/")
    [query] = [q for q in record.queries if q.many]
    titles = list(Tag.objects.order_by("pk").values_list("name", flat=True))
    response = staff_client.post(explain_url(record.id, query.index))
    assert response.status_code == 200
    assert "This query is not explained: It ran with executemany()" in response.content.decode()
    as_json = staff_client.post(explain_url(record.id, query.index) + "?format=json")
    assert as_json.status_code == 422
    assert as_json.json()["error"].startswith(
        "This query is not explained: It ran with executemany()"
    )
    assert as_json.json()["plan"] is None
    assert list(Tag.objects.order_by("pk").values_list("name", flat=True)) == titles


@pytest.mark.django_db
def test_explain_without_recorded_params_says_so(library: list[Book], staff_client: Client) -> None:
    with override_settings(QUERYLENS={"RECORD_PARAMS": False}):
        record = visit("/fk_loop/")
    assert record.queries[1].params is None
    html = staff_client.post(explain_url(record.id, 1)).content.decode()
    assert "parameters were not recorded (QUERYLENS[&#x27;RECORD_PARAMS&#x27;] is off)" in html
    assert "No parameters recorded." in html


@pytest.mark.django_db
def test_a_failing_explain_is_a_message_not_a_500(staff_client: Client) -> None:
    with recorded() as result, connection.cursor() as cursor:
        cursor.execute("SELECT id FROM tests_tag WHERE id = %s", [1])
    # The table is gone by the time someone explains the query.
    [query] = result.record.queries
    gone = dataclasses.replace(query, sql="SELECT id FROM gone WHERE id = %s")
    record = store(result.record, "failing-explain", queries=[gone])
    response = staff_client.post(explain_url(record.id, 0))
    assert response.status_code == 200
    error = re.search(
        r'<p class="errornote" id="ql-explain-error">(.*?)</p>', response.content.decode(), re.S
    )
    assert error is not None
    assert error.group(1).startswith("EXPLAIN failed: ")
    assert "gone" in error.group(1)


# --- storage down ----------------------------------------------------------------------------


class DownStorage(BaseStorage):
    error: type[Exception] = StorageError

    def add(self, record: RequestRecord) -> None:
        raise self.error("down")

    def get(self, request_id: str) -> RequestRecord | None:
        raise self.error("down")

    def recent(self, limit: int | None = None) -> list[RequestRecord]:
        raise self.error("down")

    def clear(self) -> None:
        pass


class BrokenStorage(DownStorage):
    error = RuntimeError


class UnbuildableStorage(DownStorage):
    def __init__(self) -> None:
        raise ConnectionError("cannot connect")


@pytest.mark.django_db
@pytest.mark.parametrize("backend", ["DownStorage", "BrokenStorage", "UnbuildableStorage"])
def test_storage_down_is_a_503_page_not_a_500(staff_client: Client, backend: str) -> None:
    with override_settings(QUERYLENS={"STORAGE": f"tests.test_views.{backend}"}):
        for method, url in page_requests(dataclasses.replace(_placeholder(), id="any-request")):
            response = getattr(staff_client, method)(url)
            assert response.status_code == 503, url
            if "format=json" in url:
                assert response.json() == {
                    "error": "The querylens storage is unavailable; the server log has the details."
                }
            else:
                assert "The querylens storage is unavailable" in response.content.decode()


def _placeholder() -> RequestRecord:
    return RequestRecord(
        id="x",
        method="GET",
        path="/",
        view=None,
        status=200,
        started_at=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
        duration_ms=1.0,
        db_time_ms=0.0,
        query_count=0,
        duplicate_count=0,
    )


def test_url_names_in_the_querylens_namespace() -> None:
    assert reverse("querylens:hotspots") == HOTSPOTS
    assert reverse("querylens:requests") == REQUESTS
    assert reverse("querylens:request", kwargs={"request_id": "abc"}) == detail_url("abc")
    assert reverse("querylens:explain", kwargs={"request_id": "abc", "index": 7}) == explain_url(
        "abc", 7
    )


# --- odd input never breaks a page -------------------------------------------------------


@pytest.mark.django_db
def test_odd_recorded_values_give_pages_not_errors(
    library: list[Book], staff_client: Client
) -> None:
    record = visit("/fk_loop/")
    first, *rest = record.queries
    huge_sql = "SELECT 1 /* " + "x" * (10 * 1024 * 1024) + " */"
    odd = store(
        record,
        "oddinput0001",
        path="/odd/\ud800/",
        queries=[
            dataclasses.replace(first, params=["lone \ud800 surrogate", "\x00nul"], sql=huge_sql),
            *rest,
        ],
    )
    urls = [
        HOTSPOTS,
        REQUESTS,
        detail_url(odd.id),
        detail_url(odd.id) + "?format=json",
        detail_url(odd.id) + "?page=999999",
        detail_url(odd.id) + "?page=-1",
        REQUESTS + "?page=abc&path=%ED%A0%80",
    ]
    for url in urls:
        response = staff_client.get(url)
        assert response.status_code == 200, url
    page = staff_client.get(detail_url(odd.id)).content.decode()
    # What UTF-8 cannot carry is shown escaped, the rest as it is.
    assert "lone \\ud800 surrogate" in page
    exported = staff_client.get(detail_url(odd.id) + "?format=json").json()
    assert exported["queries"][0]["params"][0] == "lone \ud800 surrogate"


@pytest.mark.django_db
def test_breadcrumbs_use_the_admins_own_markup(library: list[Book]) -> None:
    record = visit("/fk_loop/")
    superuser = User.objects.create_superuser("root", password="x", email="root@example.com")
    client = Client()
    client.force_login(superuser)
    admin_page = client.get("/admin/auth/user/").content.decode()
    (admin_tag,) = re.findall(r'<(ol|div) class="breadcrumbs">', admin_page)
    ours = client.get(detail_url(record.id)).content.decode()
    match = re.search(r'<(ol|div) class="breadcrumbs">(.*?)</\1>', ours, re.S)
    assert match is not None
    assert match.group(1) == admin_tag
    trail = re.sub(r"<[^>]+>|&rsaquo;", " ", match.group(2))
    assert trail.split() == ["Home", "querylens", "Recorded", "requests", "GET", "/fk_loop/"]
    # The last crumb is the page itself, not a link.
    assert 'href="/admin/querylens/requests/"' in match.group(2)
    assert f'href="{detail_url(record.id)}"' not in match.group(2)


def _renders(client: Client, url: str) -> list[str]:
    from django.test.signals import template_rendered

    names: list[str] = []

    def seen(sender: Any, template: Any, **kwargs: Any) -> None:
        names.append(str(template.name))

    template_rendered.connect(seen)
    try:
        assert client.get(url).status_code == 200
    finally:
        template_rendered.disconnect(seen)
    return names


@pytest.mark.django_db
def test_the_request_page_renders_a_fixed_number_of_templates(staff_client: Client) -> None:
    # Every template render is paid again by django-debug-toolbar's Templates
    # panel; the page must not render one per query or per stack frame.
    make_library(authors=3, books_per_author=2)
    small = visit("/fk_loop/")
    make_library(authors=20, books_per_author=3)
    large = visit("/fk_loop/")
    assert large.query_count > 5 * small.query_count
    small_renders = _renders(staff_client, detail_url(small.id))
    large_renders = _renders(staff_client, detail_url(large.id))
    assert sorted(large_renders) == sorted(small_renders)
    assert len(large_renders) <= 12, large_renders


@pytest.mark.django_db
def test_hotspots_json_gives_the_three_rankings(library: list[Book], staff_client: Client) -> None:
    record = visit("/fk_loop/")
    data = staff_client.get(HOTSPOTS + "?format=json").json()
    assert data["request_count"] == 1
    assert data["skipped"] == 0
    (n_plus_one,) = data["n_plus_one"]
    assert n_plus_one["relation"] == "tests.Book.author"
    assert n_plus_one["suggestion"] == 'select_related("author")'
    assert n_plus_one["worst"]["request_id"] == record.id
    # Every shape is in the slow ranking, worst total first; the slowest run
    # of each is the one to EXPLAIN.
    slow = data["slow"]
    assert {spot["fingerprint"] for spot in slow} == {q.fingerprint for q in record.queries}
    assert [spot["total_ms"] for spot in slow] == sorted(
        (s["total_ms"] for s in slow), reverse=True
    )
    for spot in slow:
        run = record.queries[spot["worst"]["query_index"]]
        assert run.fingerprint == spot["fingerprint"]
        assert spot["max_ms"] == run.duration_ms


@pytest.mark.django_db
def test_the_slow_table_offers_explain_only_with_the_permission(library: list[Book]) -> None:
    record = visit("/fk_loop/")
    explainer = Client()
    explainer.force_login(querylens_staff("explainer"))
    page = explainer.get(HOTSPOTS).content.decode()
    assert 'id="slow"' in page
    assert re.search(rf'action="/admin/querylens/requests/{record.id}/queries/\d+/explain/"', page)
    viewer = Client()
    viewer.force_login(querylens_staff("viewer", perms=("querylens.view_hotspotspage",)))
    page = viewer.get(HOTSPOTS).content.decode()
    assert 'id="slow"' in page
    assert "/explain/" not in page


@pytest.mark.django_db
def test_a_duplicate_no_n_plus_one_explains_keeps_its_own_row(
    library: list[Book], staff_client: Client
) -> None:
    record = visit("/duplicates/")
    assert record.n_plus_one == []
    html = staff_client.get(detail_url(record.id)).content.decode()
    assert html.count('id="dup-') == len(record.duplicates) == 1
    assert "in N+1 groups" not in html
