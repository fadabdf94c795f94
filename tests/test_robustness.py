"""querylens never changes what a request does, even when its own code fails.

Each test compares what the user gets (status, body, query results) with and
without the failure or querylens, and what the record keeps.
"""

from __future__ import annotations

import gc
import logging
import tracemalloc
import types
from typing import Any

import pytest
from django.db import connection
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext

from querylens import capture, relations
from querylens.capture import MAX_PARAM_CHARS, MAX_SQL_CHARS
from tests import views
from tests.helpers import latest_record
from tests.settings import MIDDLEWARE

pytestmark = pytest.mark.usefixtures("library")

WITHOUT_QUERYLENS = [name for name in MIDDLEWARE if not name.startswith("querylens.")]


def _boom(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("injected failure inside querylens")


@pytest.fixture(autouse=True)
def _forget_reported_errors() -> Any:
    # Each place logs once per process; each test starts with a clean slate.
    capture._reported.clear()
    yield
    capture._reported.clear()


@pytest.mark.parametrize(
    ("target", "name", "url"),
    [
        (capture, "capture_stack", "/fk_loop/"),
        (capture.Recorder, "add", "/fk_loop/"),
        (capture, "kept_params", "/raw_loop/"),
        (relations, "origin", "/fk_loop/"),
        (relations, "origin", "/reverse_fk/"),
        (capture.Recorder, "tag_since", "/reverse_fk/"),
        (capture.Recorder, "tag_since", "/m2m/"),
    ],
)
def test_a_failure_in_per_query_code_leaves_the_response_unchanged(
    client: Client,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    target: Any,
    name: str,
    url: str,
) -> None:
    expected = client.get(url)
    monkeypatch.setattr(target, name, _boom)
    with caplog.at_level(logging.WARNING, logger="querylens"):
        responses = [client.get(url) for _ in range(3)]
    for response in responses:
        assert response.status_code == expected.status_code == 200
        assert response.content == expected.content
    warnings = [r for r in caplog.records if "querylens failed while" in r.getMessage()]
    # Logged, with the traceback, once for the whole process, not per query.
    assert len(warnings) == 1
    assert warnings[0].exc_info is not None
    assert "injected failure" in str(warnings[0].exc_info[1])


def test_a_failing_query_still_raises_its_own_error_when_recording_fails(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(capture.Recorder, "add", _boom)
    # The view catches the database's error and says so: that error, not
    # ours, must reach it.
    response = client.get("/failing_query/")
    assert response.status_code == 200
    expected = Client().get("/failing_query/")
    assert response.content == expected.content


def test_recorded_params_are_what_was_executed(client: Client) -> None:
    client.get("/mutated_params/")
    query = next(q for q in latest_record().queries if "tests_author" in q.sql)
    assert query.params == ["first"]


def _growth(client: Client, url: str) -> int:
    """Bytes still allocated after one request to ``url`` (the buffer included)."""
    gc.collect()
    tracemalloc.start()
    try:
        response = client.get(url)
        assert response.status_code == 200
        gc.collect()
        grown, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return grown


def test_a_huge_statement_in_a_loop_keeps_memory_bounded(client: Client) -> None:
    client.get("/no_queries/")  # warm-up: first-request allocations are not ours
    with override_settings(MIDDLEWARE=WITHOUT_QUERYLENS):
        # A client builds its middleware chain on its first request: one each.
        bare = _growth(Client(), "/huge_statement/")
    recorded = _growth(client, "/huge_statement/")
    record = latest_record()
    huge = [q for q in record.queries if q.sql.startswith("SELECT ")]
    assert len(huge) == views.HUGE_REPEATS
    for query in huge:
        assert len(query.sql) < MAX_SQL_CHARS + 100
        assert query.sql.endswith(f"/* querylens: truncated, {views.HUGE_SQL_CHARS} characters */")
    # 20 statements of 10 MB: kept whole, the buffer would hold 200 MB more.
    # (SQLite's own statement cache keeps recent SQL in both runs alike.)
    extra = recorded - bare
    assert extra < 8 * 1024 * 1024, f"querylens kept {extra / 1e6:.1f} MB more"


_PROGRAM = (type, types.ModuleType, types.FunctionType, types.CodeType)


def _reachable(root: Any, *, leaving_out: set[int], tracked_only: bool = False) -> set[int]:
    """Ids of the objects ``root`` holds, directly or not, but not the program's own.

    ``tracked_only``: only objects the garbage collector tracks. A buffered
    record is visited in every full collection, and each one still tracked
    counts towards the next: what a buffer costs the collector.
    """
    found: set[int] = set()
    todo = [root]
    while todo:
        item = todo.pop()
        if id(item) in found or id(item) in leaving_out or isinstance(item, _PROGRAM):
            continue
        if tracked_only and not gc.is_tracked(item):
            continue
        found.add(id(item))
        todo.extend(gc.get_referents(item))
    return found


@pytest.mark.parametrize("rows", [10, 100])
def test_a_kept_record_is_a_few_objects_for_the_garbage_collector(rows: int) -> None:
    from querylens.testing import recorded
    from tests.models import Book

    def page() -> Any:
        with recorded() as result:
            for number in range(rows):
                list(Book.objects.filter(pk=number))
            Book.objects.filter(title__startswith="A").count()
        return result.record

    earlier = page()  # what the process keeps between requests (caches) comes from here
    record = page()
    # A record is through several collections while a buffer keeps it:
    # a tuple is untracked once one of them finds it holds nothing trackable.
    for _ in range(3):
        gc.collect()
    assert record.query_count == rows + 1
    assert record.n_plus_one_count == 1
    shared = _reachable(earlier, leaving_out=set())
    held = len(_reachable(record, leaving_out=shared, tracked_only=True))
    # The record and its N+1 group, a handful of containers between them:
    # none per query (there were 16 when each column was a list and each
    # record kept its own copy of every stack).
    assert held <= 8, f"a {rows}-query record holds {held} tracked objects"


def test_a_long_parameter_is_cut_in_the_record(client: Client) -> None:
    from querylens.testing import recorded
    from tests.models import Author

    long_name = "n" * (MAX_PARAM_CHARS * 3)
    with recorded() as result:
        assert not Author.objects.filter(name=long_name).exists()
    (query,) = result.record.queries
    assert query.params is not None
    # The record shows the start of a long value...
    (shown,) = [p for p in query.params if isinstance(p, str) and p.startswith("nnn")]
    assert len(shown) <= 1001
    assert shown.endswith("…")
    # ...and while the request runs, no more than MAX_PARAM_CHARS of it is held.
    (raw,) = result.recorder.queries
    (held,) = [p for p in raw.params if isinstance(p, str) and p.startswith("nnn")]
    assert len(held) < MAX_PARAM_CHARS + 100
    assert held.endswith(f"[querylens: truncated, {len(long_name)} characters]")


def _smallest_spare(client: Client) -> int:
    """The fewest spare frames with which the deep view's query still runs."""
    low, high = 0, 400
    assert client.get(f"/deep_recursion/?spare={high}").content.startswith(b"ok ")
    while low < high:
        middle = (low + high) // 2
        if client.get(f"/deep_recursion/?spare={middle}").content.startswith(b"ok "):
            high = middle
        else:
            low = middle + 1
    return low


#: Frames querylens adds below a query (its execute wrapper), as documented
#: in docs/staging.rst.
FRAMES_ADDED = 1


def test_deep_recursion_needs_at_most_the_documented_extra_frames(client: Client) -> None:
    if connection.vendor == "mysql":
        pytest.skip(
            "PyMySQL is pure Python: the search for the edge cuts it mid-packet with a "
            "RecursionError and breaks the connection, with or without querylens"
        )
    with override_settings(MIDDLEWARE=WITHOUT_QUERYLENS):
        bare = _smallest_spare(Client())
    recorded_spare = _smallest_spare(client)
    assert recorded_spare <= bare + FRAMES_ADDED
    # At the very edge querylens's own bookkeeping may run out of stack: the
    # query's answer still reaches the view, and the request is still recorded.
    response = client.get(f"/deep_recursion/?spare={recorded_spare}")
    assert response.content == b"ok 6"
    assert latest_record().path == "/deep_recursion/"


# --- headers decide staff-ness without queries of their own ------------------------


def _queries_run(client: Client, url: str) -> tuple[int, Any]:
    with CaptureQueriesContext(connection) as context:
        response = client.get(url)
    return len(context.captured_queries), response


@pytest.mark.parametrize("url", ["/fk_loop/", "/no_queries/", "/whoami/"])
@pytest.mark.parametrize("policy", ["auto", "staff"])
def test_header_policy_adds_no_query_for_a_logged_in_user(
    client: Client, settings: Any, django_user_model: Any, url: str, policy: str
) -> None:
    settings.DEBUG = False
    settings.QUERYLENS = {"HEADERS": policy}
    user = django_user_model.objects.create_user("s", is_staff=True)
    client.force_login(user)
    with override_settings(MIDDLEWARE=WITHOUT_QUERYLENS):
        # A client builds its middleware chain on its first request: one each.
        bare_client = Client()
        bare_client.force_login(user)
        bare_count, bare = _queries_run(bare_client, url)
    count, response = _queries_run(client, url)
    assert "X-QueryLens-Request" in response or url != "/whoami/"
    assert count == bare_count
    assert response.content == bare.content
    # The header agrees with what the database ran.
    if "X-QueryLens-Queries" in response:
        assert int(response["X-QueryLens-Queries"]) == count


def test_staff_gets_headers_on_a_page_that_loaded_the_user(
    client: Client, settings: Any, django_user_model: Any
) -> None:
    settings.DEBUG = False
    client.force_login(django_user_model.objects.create_user("s", is_staff=True))
    assert client.get("/whoami/")["X-QueryLens-NPlusOne"] == "1"
    # A page that never looks at the user cannot tell staff from anyone else
    # without a query of its own: no headers there.
    assert "X-QueryLens-Queries" not in client.get("/fk_loop/")


def test_non_staff_gets_no_headers_on_a_page_that_loaded_the_user(
    client: Client, settings: Any, django_user_model: Any
) -> None:
    settings.DEBUG = False
    client.force_login(django_user_model.objects.create_user("m"))
    assert "X-QueryLens-Queries" not in client.get("/whoami/")


@pytest.mark.django_db(transaction=True)
async def test_async_staff_gets_headers_once_the_view_awaited_the_user(
    async_client: Any, settings: Any, django_user_model: Any
) -> None:
    settings.DEBUG = False
    user = await django_user_model.objects.acreate(username="a", is_staff=True)
    await async_client.aforce_login(user)
    response = await async_client.get("/async_whoami/")
    assert response.status_code == 200
    assert response["X-QueryLens-NPlusOne"] == "1"
    assert "X-QueryLens-Queries" not in await async_client.get("/async_get_loop/")


def test_a_user_set_directly_by_an_auth_layer_counts(settings: Any) -> None:
    from django.contrib.auth.models import AnonymousUser, User
    from django.http import HttpRequest, HttpResponse

    from querylens.middleware import QueryLensMiddleware

    settings.DEBUG = False
    staff = User(username="token-staff", is_staff=True, is_active=True)

    def view(request: HttpRequest) -> HttpResponse:
        request.user = staff  # what DRF's Request.user setter does
        return HttpResponse("ok")

    def anonymous_view(request: HttpRequest) -> HttpResponse:
        request.user = AnonymousUser()
        return HttpResponse("ok")

    request = HttpRequest()
    request.method, request.path = "GET", "/api/"
    assert "X-QueryLens-Queries" in QueryLensMiddleware(view)(request)
    request = HttpRequest()
    request.method, request.path = "GET", "/api/"
    assert "X-QueryLens-Queries" not in QueryLensMiddleware(anonymous_view)(request)


_LEAN_PROCESS = """
import sys
import django
from django.conf import settings

settings.configure(
    INSTALLED_APPS=[
        "django.contrib.admin", "django.contrib.auth", "django.contrib.contenttypes",
        "django.contrib.sessions", "django.contrib.messages", "querylens",
    ],
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
    TEMPLATES=[{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True}],
    MIDDLEWARE=["querylens.middleware.QueryLensMiddleware"],
    ROOT_URLCONF="querylens.urls",
)
django.setup()
from django.template import engines
engines["django"].engine.template_libraries  # every app's template tags, ours too
import querylens.admin, querylens.middleware, querylens.panels, querylens.storage, querylens.views
print(sorted(name for name in ("pygments", "redis") if name in sys.modules))
from querylens.formatting import highlight_sql
print("<span" in highlight_sql("select 1"), "pygments" in sys.modules)
"""


def test_a_process_that_shows_no_page_imports_neither_pygments_nor_redis() -> None:
    """Their modules would stay in memory for every full garbage collection to visit."""
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", _LEAN_PROCESS], capture_output=True, text=True, check=True
    )
    assert result.stdout.splitlines() == ["[]", "True True"]
