"""The middleware: headers, policies, exclusions, robustness, concurrency."""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

import pytest
from asgiref.sync import iscoroutinefunction
from django.contrib.auth.models import AnonymousUser, User
from django.http import HttpRequest, HttpResponse
from django.test import Client, RequestFactory

from querylens.middleware import QueryLensMiddleware
from querylens.storage import BaseStorage, MemoryStorage, get_storage
from tests.helpers import latest_record, record_of

HEADERS = (
    "X-QueryLens-Request",
    "X-QueryLens-Queries",
    "X-QueryLens-Time",
    "X-QueryLens-Duplicates",
    "X-QueryLens-NPlusOne",
)

pytestmark = pytest.mark.usefixtures("library")


@pytest.fixture
def staff(db: None) -> User:
    return User.objects.create_user("staff", password="pw", is_staff=True)


@pytest.fixture
def member(db: None) -> User:
    return User.objects.create_user("member", password="pw")


def has_headers(response: Any) -> bool:
    present = [name in response for name in HEADERS]
    assert all(present) or not any(present), "headers must come all together"
    return all(present)


def test_headers_follow_the_contract(client: Client, settings: Any) -> None:
    settings.QUERYLENS = {"HEADERS": "always"}
    response = client.get("/fk_loop/")
    assert re.fullmatch(r"[A-Za-z0-9_-]{8,64}", response["X-QueryLens-Request"])
    assert response["X-QueryLens-Queries"] == "7"
    assert re.fullmatch(r"\d+\.\d{2}", response["X-QueryLens-Time"])
    assert response["X-QueryLens-Duplicates"] == "3"
    assert response["X-QueryLens-NPlusOne"] == "1"
    assert re.fullmatch(r'db;dur=\d+\.\d{2};desc="7 queries"', response["Server-Timing"]), response[
        "Server-Timing"
    ]
    assert response["Server-Timing"] == f'db;dur={response["X-QueryLens-Time"]};desc="7 queries"'


def test_server_timing_is_appended_to_an_existing_value(client: Client, settings: Any) -> None:
    settings.QUERYLENS = {"HEADERS": "always"}
    response = client.get("/server_timing/")
    first, second = response["Server-Timing"].split(", ")
    assert first == 'app;dur=1.5;desc="view"'
    assert second.startswith("db;dur=")
    assert second.endswith('desc="1 query"')


def test_request_ids_are_unique(client: Client, settings: Any) -> None:
    settings.QUERYLENS = {"HEADERS": "always"}
    ids = {client.get("/no_queries/")["X-QueryLens-Request"] for _ in range(20)}
    assert len(ids) == 20


@pytest.mark.parametrize(
    ("policy", "debug", "who", "shown"),
    [
        ("auto", False, "anonymous", False),
        ("auto", False, "member", False),
        ("auto", False, "staff", True),
        ("auto", True, "anonymous", True),
        ("staff", True, "anonymous", False),
        ("staff", False, "member", False),
        ("staff", False, "staff", True),
        ("always", False, "anonymous", True),
        ("never", True, "staff", False),
    ],
)
def test_header_policy(
    client: Client,
    settings: Any,
    staff: User,
    member: User,
    policy: str,
    debug: bool,
    who: str,
    shown: bool,
) -> None:
    settings.DEBUG = debug
    settings.QUERYLENS = {"HEADERS": policy}
    if who != "anonymous":
        client.force_login(staff if who == "staff" else member)
    # A page that reads request.user, as the policy only trusts a loaded user.
    response = client.get("/whoami/")
    assert response.status_code == 200
    assert has_headers(response) is shown
    assert "Server-Timing" in response if shown else "Server-Timing" not in response
    # Whatever the policy, the request is recorded for the staff pages.
    assert latest_record().path == "/whoami/"


def test_default_policy_hides_headers_from_anonymous_users(client: Client, settings: Any) -> None:
    settings.DEBUG = False
    response = client.get("/fk_loop/")
    assert not has_headers(response)


def test_inactive_staff_user_gets_no_headers(client: Client, settings: Any, staff: User) -> None:
    settings.QUERYLENS = {"HEADERS": "staff"}
    client.force_login(staff)
    assert has_headers(client.get("/whoami/"))
    staff.is_active = False
    staff.save()
    assert not has_headers(client.get("/whoami/"))


@pytest.mark.django_db(transaction=True)
async def test_async_client_gets_headers_for_staff(async_client: Any, settings: Any) -> None:
    settings.QUERYLENS = {"HEADERS": "staff"}
    user = await User.objects.acreate(username="astaff", is_staff=True)
    await async_client.aforce_login(user)
    response = await async_client.get("/async_whoami/")
    assert response.status_code == 200
    assert response["X-QueryLens-NPlusOne"] == "1"
    anonymous = await async_client.__class__().get("/async_whoami/")
    assert not has_headers(anonymous)


def _view(request: HttpRequest) -> HttpResponse:
    from tests.models import Book

    return HttpResponse(str(Book.objects.count()))


async def _async_view(request: HttpRequest) -> HttpResponse:
    from tests.models import Book

    return HttpResponse(str(await Book.objects.acount()))


def test_direct_call_with_a_sync_view(rf: RequestFactory, settings: Any) -> None:
    settings.QUERYLENS = {"HEADERS": "always"}
    middleware = QueryLensMiddleware(_view)
    assert not iscoroutinefunction(middleware)
    request = rf.get("/direct/")
    request.user = AnonymousUser()
    response = middleware(request)
    assert response.content == b"6"
    assert response["X-QueryLens-Queries"] == "1"
    assert record_of(response).path == "/direct/"


@pytest.mark.django_db(transaction=True)
async def test_direct_call_with_an_async_view(async_rf: Any, settings: Any) -> None:
    settings.QUERYLENS = {"HEADERS": "always"}
    middleware = QueryLensMiddleware(_async_view)
    assert iscoroutinefunction(middleware)
    response = await middleware(async_rf.get("/direct-async/"))
    assert response.content == b"6"
    record = record_of(response)
    assert response["X-QueryLens-Queries"] == str(len(record.queries))
    # A fresh connection may run session set-up (MariaDB's SET ...) first.
    (query,) = [q for q in record.queries if "tests_book" in q.sql]
    assert query.callsite is not None
    assert query.callsite.function == "_async_view"


class BrokenStorage(MemoryStorage):
    def add(self, record: Any) -> None:
        raise ConnectionError("storage is down")


def test_a_broken_storage_never_breaks_the_response(
    client: Client,
    settings: Any,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import querylens.lifecycle

    monkeypatch.setattr(querylens.lifecycle, "_last_storage_warning", float("-inf"))
    settings.QUERYLENS = {"HEADERS": "always", "STORAGE": "tests.test_middleware.BrokenStorage"}
    with caplog.at_level(logging.WARNING, logger="querylens"):
        first = client.get("/fk_loop/")
        second = client.get("/fk_loop/")
    assert first.status_code == second.status_code == 200
    assert first.content.startswith(b"Author")
    assert first["X-QueryLens-Queries"] == "7"  # headers still come out
    warnings = [r for r in caplog.records if "could not store" in r.getMessage()]
    assert len(warnings) == 1, "the warning is rate-limited"


class ThreadNotingStorage(BaseStorage):
    """A storage that is not in memory and notes the thread each write ran in."""

    threads: list[int] = []

    def add(self, record: Any) -> None:
        self.threads.append(threading.get_ident())

    def recent(self, limit: int | None = None) -> list[Any]:
        return []


@pytest.mark.django_db(transaction=True)
async def test_async_requests_write_shared_storage_off_the_event_loop(
    async_client: Any, settings: Any
) -> None:
    settings.QUERYLENS = {
        "HEADERS": "always",
        "STORAGE": "tests.test_middleware.ThreadNotingStorage",
    }
    ThreadNotingStorage.threads.clear()
    response = await async_client.get("/async_get_loop/")
    assert response.status_code == 200
    assert response["X-QueryLens-NPlusOne"] == "1"
    assert len(ThreadNotingStorage.threads) == 1
    assert ThreadNotingStorage.threads[0] != threading.get_ident()


def test_an_error_inside_analysis_is_logged_and_the_response_goes_out(
    client: Client, settings: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import querylens.lifecycle

    def explode(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("analysis bug")

    monkeypatch.setattr(querylens.lifecycle, "finish_request", explode)
    settings.QUERYLENS = {"HEADERS": "always"}
    with caplog.at_level(logging.ERROR, logger="querylens"):
        response = client.get("/fk_loop/")
    assert response.status_code == 200
    assert response.content.startswith(b"Author")
    assert "X-QueryLens-Queries" not in response
    assert any("analysis bug" in (r.exc_text or "") for r in caplog.records)


def test_an_error_at_start_is_logged_and_the_response_goes_out(
    client: Client, settings: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import querylens.lifecycle

    def explode(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("start bug")

    monkeypatch.setattr(querylens.lifecycle, "start", explode)
    settings.QUERYLENS = {"HEADERS": "always"}
    with caplog.at_level(logging.ERROR, logger="querylens"):
        response = client.get("/fk_loop/")
    assert response.status_code == 200
    assert "X-QueryLens-Queries" not in response
    assert any("could not start" in r.getMessage() for r in caplog.records)


def test_disabled_records_nothing(client: Client, settings: Any) -> None:
    settings.QUERYLENS = {"HEADERS": "always", "ENABLED": False}
    response = client.get("/fk_loop/")
    assert not has_headers(response)
    assert get_storage().recent() == []


def test_sample_rate_zero_records_nothing(client: Client, settings: Any) -> None:
    settings.QUERYLENS = {"HEADERS": "always", "SAMPLE_RATE": 0}
    for _ in range(5):
        assert not has_headers(client.get("/fk_loop/"))
    assert get_storage().recent() == []


def test_sample_rate_half_records_some(client: Client, settings: Any) -> None:
    settings.QUERYLENS = {"HEADERS": "always", "SAMPLE_RATE": 0.5}
    shown = sum(has_headers(client.get("/no_queries/")) for _ in range(200))
    # Binomial(200, 0.5): outside 60..140 has a probability below 1e-8.
    assert 60 <= shown <= 140
    assert len(get_storage().recent()) == shown


def test_excluded_paths_are_not_recorded(client: Client, settings: Any) -> None:
    settings.QUERYLENS = {"HEADERS": "always", "EXCLUDE_PATHS": [r"^/fk_"]}
    assert not has_headers(client.get("/fk_loop/"))
    assert has_headers(client.get("/m2m/"))
    assert [r.path for r in get_storage().recent()] == ["/m2m/"]


def test_static_and_media_are_excluded_by_default(settings: Any) -> None:
    from querylens.conf import conf

    settings.STATIC_URL = "/static/"
    settings.MEDIA_URL = "/media/"
    assert conf.EXCLUDE_PATHS == ["^/static/", "^/media/"]


def test_querylens_pages_are_not_recorded(client: Client, settings: Any, staff: User) -> None:
    from django.urls import reverse

    settings.QUERYLENS = {"HEADERS": "always"}
    client.force_login(staff)
    client.get(reverse("querylens:hotspots"))
    assert get_storage().recent() == []


def test_record_describes_the_request(client: Client, settings: Any) -> None:
    settings.QUERYLENS = {"HEADERS": "always"}
    response = client.post("/json_ok/?x=1")
    record = record_of(response)
    assert record.method == "POST"
    assert record.path == "/json_ok/"
    assert record.view == "tests.views.json_ok"
    assert record.status == 200
    assert record.duration_ms >= record.db_time_ms
    assert record.started_at.tzinfo is not None


def test_404_is_recorded_with_its_status(client: Client, settings: Any) -> None:
    settings.QUERYLENS = {"HEADERS": "always"}
    response = client.get("/no-such-page/")
    assert response.status_code == 404
    assert record_of(response).status == 404


def test_n_plus_one_is_logged_at_debug(client: Client, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="querylens"):
        client.get("/fk_loop/")
    (message,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("N+1")]
    assert "GET /fk_loop/: 6 queries" in message
    assert "tests/views.py:" in message
    assert "via tests.Book.author" in message
    assert 'fix: select_related("author")' in message


def test_no_log_line_at_info_level(client: Client, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="querylens"):
        client.get("/fk_loop/")
    assert not [r for r in caplog.records if r.name == "querylens"]


@pytest.mark.django_db(transaction=True)
def test_concurrent_requests_in_threads_do_not_mix(settings: Any) -> None:
    settings.QUERYLENS = {"HEADERS": "always"}
    pages = {
        "fk_loop": ("7", "1"),
        "m2m_fixed": ("2", "0"),
        "no_queries": ("0", "0"),
        "reverse_fk": ("4", "1"),
    }
    results: list[tuple[str, str, str]] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def worker(page: str) -> None:
        try:
            client = Client()
            barrier.wait(timeout=10)
            for _ in range(5):
                response = client.get(f"/{page}/")
                results.append(
                    (page, response["X-QueryLens-Queries"], response["X-QueryLens-NPlusOne"])
                )
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            from django.db import connections

            connections.close_all()

    threads = [threading.Thread(target=worker, args=(page,)) for page in list(pages) * 2]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors
    assert len(results) == 40
    for page, queries, groups in results:
        assert (queries, groups) == pages[page], page
    assert len(get_storage().recent()) == 40


@pytest.mark.postgres
@pytest.mark.django_db(databases=["default", "postgres"])
def test_queries_on_every_alias_are_recorded(client: Client, settings: Any) -> None:
    from tests.factories import make_library

    settings.QUERYLENS = {"HEADERS": "always"}
    make_library(using="postgres")
    from querylens.testing import recorded
    from tests.models import Book

    with recorded() as result:
        list(Book.objects.all())
        names = [book.author.name for book in Book.objects.using("postgres").all()]
    assert len(names) == 6
    record = result.record
    assert [q.alias for q in record.queries] == ["default"] + ["postgres"] * 7
    (group,) = record.n_plus_one
    assert group.relation == "tests.Book.author"
    assert group.count == 6


def test_a_finished_request_leaves_nothing_for_the_garbage_collector(
    client: Client, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The recorder, its frames and the request's objects go when the request does.

    A reference cycle (frames kept for the call-site walk lead back to the
    middleware's frame, which holds the recording) would keep every query
    and model instance of the request until the next full collection: memory
    and collector time paid by the whole process.
    """
    import gc
    import weakref

    from querylens import capture

    made: list[weakref.ref[capture.Recorder]] = []
    original = capture.Recorder.__init__

    def remember(self: capture.Recorder, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        made.append(weakref.ref(self))

    monkeypatch.setattr(capture.Recorder, "__init__", remember)
    settings.QUERYLENS = {"HEADERS": "always"}
    client.get("/fk_loop/")  # warm: caches of the first request are not the point
    made.clear()
    gc.collect()
    gc.disable()
    try:
        response = client.get("/fk_loop/")
        assert response["X-QueryLens-NPlusOne"] == "1"
        assert len(made) == 1
        assert made[0]() is None, "the recorder outlived its request"
    finally:
        gc.enable()


def test_a_request_left_out_by_sampling_runs_djangos_own_descriptors(
    client: Client, settings: Any
) -> None:
    from django.db.models.fields.related_descriptors import ForwardManyToOneDescriptor

    from querylens import capture, relations

    if capture.recording_anywhere():
        pytest.skip("this test is itself recorded (pytest --querylens)")
    settings.QUERYLENS = {"HEADERS": "always"}
    recorded = client.get("/fk_loop/")
    assert recorded["X-QueryLens-NPlusOne"] == "1"
    assert relations._hooks_on  # kept for the next recorded request
    settings.QUERYLENS = {"HEADERS": "always", "SAMPLE_RATE": 0.0}
    sampled_out = client.get("/fk_loop/")
    assert "X-QueryLens-Request" not in sampled_out
    assert sampled_out.content == recorded.content
    assert not relations._hooks_on
    assert not hasattr(ForwardManyToOneDescriptor.__get__, "__wrapped__")
