"""CacheStorage: the ring buffer shared through a Django cache (Redis).

Tests marked ``redis`` use the ``"redis"`` alias of tests/settings.py, each
under a key prefix of its own so that runs sharing the server never meet; the
keys are deleted afterwards and expire anyway. Tests of an unreachable server
point a cache at a closed port and need no server at all.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.locmem import LocMemCache
from django.core.checks import run_checks
from django.test import Client, override_settings
from django.urls import reverse

import querylens.lifecycle
import querylens.middleware
from querylens.records import CallSite, DuplicateGroup, NPlusOneGroup, QueryRecord, RequestRecord
from querylens.storage import CacheStorage, StorageError, get_storage

CACHE_STORAGE = "querylens.storage.CacheStorage"
#: Nothing listens on port 1 of the loopback: connecting fails at once.
CLOSED_REDIS = {
    "BACKEND": "django.core.cache.backends.redis.RedisCache",
    "LOCATION": "redis://127.0.0.1:1/0",
    "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
}
LOCMEM = {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}


def make_record(number: int, queries: int = 3, sql: str = "SELECT 1") -> RequestRecord:
    """A record whose queries form one N+1 group and one duplicate group."""
    site = CallSite("shop/views.py", 17, "book_list")
    return RequestRecord(
        id=f"request-{number:06d}",
        method="GET",
        path=f"/books/{number}/",
        view="shop.views.book_list",
        status=200,
        started_at=dt.datetime(2026, 11, 21, 10, 0, number % 60, tzinfo=dt.timezone.utc),
        duration_ms=12.5,
        db_time_ms=4.25,
        query_count=queries,
        duplicate_count=queries - 1,
        queries=[
            QueryRecord(
                index=i,
                alias="default",
                sql=sql,
                params=[i],
                duration_ms=0.5,
                fingerprint="9f2c",
                callsite=site,
                stack=[site, CallSite("shop/urls.py", 3, "dispatch")],
                relation="shop.Book.author",
            )
            for i in range(queries)
        ],
        duplicates=[DuplicateGroup("9f2c", queries, sql, list(range(queries)))]
        if queries > 1
        else [],
        n_plus_one=[
            NPlusOneGroup(
                fingerprint="9f2c",
                count=queries,
                total_ms=queries * 0.5,
                callsite=site,
                relation="shop.Book.author",
                suggestion='select_related("author")',
                sample_sql=sql,
                query_indexes=list(range(queries)),
            )
        ]
        if queries > 1
        else [],
    )


def stored(store: CacheStorage, *records: RequestRecord) -> None:
    """Hand records to the storage as a request does, and wait for its writer."""
    for record in records:
        store.add(record)
    assert store.flush(10.0), "the writer thread did not finish in 10 s"


def ids(records: list[RequestRecord]) -> list[str]:
    return [record.id for record in records]


@pytest.fixture
def prefix() -> str:
    # Letters and digits only: the prefix is also a glob pattern below.
    return f"qltest{uuid.uuid4().hex}"


def redis_keys(prefix: str) -> list[str]:
    """Every key under ``prefix`` on the test Redis server, as querylens named it."""
    cache = caches["redis"]
    client = cache._cache.get_client(write=True)  # type: ignore[attr-defined]
    full_prefix = cache.make_key(prefix)
    return sorted(
        key.decode()[len(full_prefix) - len(prefix) :]
        for key in client.scan_iter(f"{full_prefix}:*")
    )


@pytest.fixture
def storage(prefix: str) -> Iterator[CacheStorage]:
    store = CacheStorage(size=5, alias="redis", prefix=prefix, timeout=300)
    yield store
    caches["redis"].delete_many(redis_keys(prefix))


@pytest.fixture
def closed_cache() -> Iterator[None]:
    with override_settings(CACHES={**settings.CACHES, "down": CLOSED_REDIS}):
        yield


# -- round trips on Redis -------------------------------------------------


@pytest.mark.redis
def test_a_record_reads_back_exactly_as_written(storage: CacheStorage) -> None:
    record = make_record(1)
    stored(storage, record)
    assert storage.get(record.id) == record
    assert storage.recent() == [record]


@pytest.mark.redis
def test_the_slot_holds_each_call_site_once_and_reads_back_as_the_record(
    storage: CacheStorage, prefix: str
) -> None:
    from querylens.storage import expand

    record = make_record(1, queries=50)
    stored(storage, record)
    value = json.loads(caches["redis"].get(f"{prefix}:slot:1"))
    assert value["seq"] == 1
    assert value["v"] == 2
    compact = value["record"]
    # Two call sites and one stack shared by the fifty queries.
    assert compact["sites"] == [
        ["shop/views.py", 17, "book_list"],
        ["shop/urls.py", 3, "dispatch"],
    ]
    assert compact["stacks"] == [[0, 1]]
    assert compact["n_plus_one"][0]["suggestion"] == 'select_related("author")'
    assert expand(compact) == record
    # What the JSON export serves is the design's shape, as before.
    assert storage.get(record.id).to_dict() == record.to_dict()  # type: ignore[union-attr]
    full = len(json.dumps(record.to_dict(), separators=(",", ":")))
    assert len(caches["redis"].get(f"{prefix}:slot:1")) < 0.75 * full


@pytest.mark.redis
def test_recent_is_newest_first_and_honours_the_limit(storage: CacheStorage) -> None:
    for number in range(1, 4):
        stored(storage, make_record(number))
    assert ids(storage.recent()) == ["request-000003", "request-000002", "request-000001"]
    assert ids(storage.recent(2)) == ["request-000003", "request-000002"]
    assert storage.recent(0) == []


@pytest.mark.redis
def test_an_empty_buffer_reads_as_empty(storage: CacheStorage) -> None:
    assert storage.recent() == []
    assert storage.get("request-000001") is None


@pytest.mark.redis
def test_a_full_buffer_keeps_the_newest_records(storage: CacheStorage) -> None:
    for number in range(1, 13):
        stored(storage, make_record(number))
    assert ids(storage.recent()) == [f"request-{n:06d}" for n in range(12, 7, -1)]
    assert storage.get("request-000007") is None
    assert storage.get("request-000008") == make_record(8)


@pytest.mark.redis
def test_keys_stay_bounded_however_many_requests(storage: CacheStorage, prefix: str) -> None:
    for number in range(1, 31):
        stored(storage, make_record(number))
    # The counter, and per slot the record and its owner: nothing per request.
    assert redis_keys(prefix) == sorted(
        [f"{prefix}:n"]
        + [f"{prefix}:slot:{slot}" for slot in range(5)]
        + [f"{prefix}:owner:{slot}" for slot in range(5)]
    )
    assert storage.get("request-000030") == make_record(30)


@pytest.mark.redis
def test_keys_expire_after_cache_timeout(storage: CacheStorage, prefix: str) -> None:
    stored(storage, make_record(1))
    client = caches["redis"]._cache.get_client()  # type: ignore[attr-defined]
    ttl = client.ttl(caches["redis"].make_key(f"{prefix}:slot:1"))
    assert 0 < ttl <= 300


@pytest.mark.redis
def test_clear_empties_the_buffer_and_writing_goes_on(storage: CacheStorage, prefix: str) -> None:
    for number in range(1, 8):
        stored(storage, make_record(number))
    storage.clear()
    assert storage.recent() == []
    assert storage.get("request-000007") is None
    assert redis_keys(prefix) == [f"{prefix}:n"]
    stored(storage, make_record(8))
    assert ids(storage.recent()) == ["request-000008"]


@pytest.mark.redis
def test_concurrent_writers_each_land_exactly_once(prefix: str) -> None:
    store = CacheStorage(size=200, alias="redis", prefix=prefix, timeout=300)
    barrier = threading.Barrier(8)

    def write(thread: int) -> None:
        barrier.wait(timeout=10)
        for number in range(thread * 25, thread * 25 + 25):
            store.add(make_record(number, queries=2))

    try:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(write, range(8)))
        stored = ids(store.recent())
        assert sorted(stored) == [f"request-{n:06d}" for n in range(200)]
        assert all(
            store.get(f"request-{n:06d}") == make_record(n, queries=2) for n in range(0, 200, 7)
        )
    finally:
        caches["redis"].delete_many(redis_keys(prefix))


@pytest.mark.redis
def test_concurrent_writers_beyond_capacity_leave_the_newest_lap(prefix: str) -> None:
    store = CacheStorage(size=20, alias="redis", prefix=prefix, timeout=300)
    try:
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(store.add, [make_record(n) for n in range(100)]))  # five laps
            stored = ids(store.recent())
            assert len(stored) == len(set(stored)) == 20
            # One more lap, after the others finished: it replaces them all.
            list(pool.map(store.add, [make_record(n) for n in range(100, 120)]))
        assert sorted(ids(store.recent())) == [f"request-{n:06d}" for n in range(100, 120)]
        assert store.get("request-000099") is None
    finally:
        caches["redis"].delete_many(redis_keys(prefix))


@pytest.mark.redis
def test_a_slot_claimed_but_not_yet_written_is_skipped(storage: CacheStorage, prefix: str) -> None:
    stored(storage, make_record(1))
    stored(storage, make_record(2))
    # Another process took sequence number 3 and has not stored its record.
    caches["redis"].incr(f"{prefix}:n")
    assert ids(storage.recent()) == ["request-000002", "request-000001"]
    assert ids(storage.recent(2)) == ["request-000002"]


@pytest.mark.redis
def test_a_record_from_an_older_lap_is_not_shown_as_current(
    storage: CacheStorage, prefix: str
) -> None:
    stored(storage, make_record(1))
    # Sequence 6 maps to slot 1 too; until its writer stores it, slot 1
    # holds sequence 1, which must not pass for 6.
    caches["redis"].incr(f"{prefix}:n", 5)
    assert storage.recent() == []


# -- garbage ----------------------------------------------------------------


GARBAGE = {
    "not json": "{not json",
    "json but not an object": "[1, 2, 3]",
    "no record": '{"seq": 2}',
    "record of wrong types": '{"seq": 2, "record": {"id": "x", "queries": "SELECT"}}',
    "not a string": 12.5,
    "a list": ["seq", 2],
}


@pytest.mark.redis
@pytest.mark.parametrize("garbage", GARBAGE.values(), ids=GARBAGE.keys())
def test_a_garbage_slot_is_skipped(storage: CacheStorage, prefix: str, garbage: Any) -> None:
    for number in range(1, 4):
        stored(storage, make_record(number))
    caches["redis"].set(f"{prefix}:slot:2", garbage)
    assert ids(storage.recent()) == ["request-000003", "request-000001"]
    assert storage.get("request-000002") is None
    assert storage.get("request-000003") == make_record(3)


@pytest.mark.redis
def test_bytes_the_cache_cannot_unpickle_are_skipped(storage: CacheStorage, prefix: str) -> None:
    for number in range(1, 4):
        stored(storage, make_record(number))
    # Written behind Django's back: the backend fails to load it, which
    # fails the whole get_many.
    client = caches["redis"]._cache.get_client(write=True)  # type: ignore[attr-defined]
    client.set(caches["redis"].make_key(f"{prefix}:slot:2"), b"\x80\x05garbage")
    client.set(caches["redis"].make_key(f"{prefix}:owner:1"), b"\x80\x05garbage")
    caches["redis"].incr(f"{prefix}:n")  # a fourth write, not stored yet
    assert ids(storage.recent()) == ["request-000003", "request-000001"]
    # Its owner entry is unreadable, so request 1 cannot be found by id.
    assert storage.get("request-000001") is None
    assert storage.get("request-000002") is None
    assert storage.get("request-000003") == make_record(3)


@pytest.mark.redis
@pytest.mark.parametrize("garbage", ["garbage", "1", "x request-000001", "1 bad id!", 1], ids=repr)
def test_a_garbage_owner_is_harmless(storage: CacheStorage, prefix: str, garbage: Any) -> None:
    stored(storage, make_record(1))
    caches["redis"].set(f"{prefix}:owner:1", garbage)
    assert storage.get("request-000001") is None
    assert ids(storage.recent()) == ["request-000001"]
    for number in range(2, 7):  # the fifth reuses slot 1
        stored(storage, make_record(number))
    assert ids(storage.recent()) == [f"request-{n:06d}" for n in range(6, 1, -1)]
    assert storage.get("request-000006") == make_record(6)


@pytest.mark.redis
def test_an_owner_naming_a_record_its_slot_no_longer_holds_finds_nothing(
    storage: CacheStorage, prefix: str
) -> None:
    stored(storage, make_record(1))
    stored(storage, make_record(2))
    # Slot 2's owner claims request 1 (a writer overwrote the slot between
    # the two reads of get()): the slot's record must be request 1 itself.
    caches["redis"].set(f"{prefix}:owner:2", "2 request-000001")
    assert storage.get("request-000001") is None
    assert storage.get("request-000002") is None


@pytest.mark.redis
def test_a_record_stored_twice_is_found_once(storage: CacheStorage) -> None:
    stored(storage, make_record(1))
    stored(storage, make_record(1))
    assert storage.get("request-000001") == make_record(1)


@pytest.mark.redis
def test_a_garbage_counter_is_a_storage_error(storage: CacheStorage, prefix: str) -> None:
    stored(storage, make_record(1))
    caches["redis"].set(f"{prefix}:n", "seven")
    with pytest.raises(StorageError, match="counter"):
        storage.recent()
    with pytest.raises(StorageError):
        storage.write([make_record(2)])


def test_a_record_whose_id_cannot_be_a_key_is_refused(local_store: CacheStorage) -> None:
    record = make_record(1)
    record.id = "has a space"
    with pytest.raises(StorageError, match="not URL-safe"):
        local_store.add(record)
    assert local_store.recent() == []


@pytest.mark.redis
def test_ids_that_could_not_be_ours_are_not_looked_up(storage: CacheStorage) -> None:
    assert storage.get("../etc passwd") is None
    assert storage.get("") is None


# -- an unreachable or slow server ------------------------------------------


@pytest.mark.usefixtures("closed_cache")
def test_an_unreachable_server_is_a_storage_error_for_every_operation() -> None:
    store = CacheStorage(size=5, alias="down", prefix="qltest")
    with pytest.raises(StorageError, match="could not store 1 record"):
        store.write([make_record(1)])
    # A request hands its record over and goes on; the writer counts the loss.
    store.add(make_record(2))
    assert store.flush(10.0)
    assert store.dropped() == 1
    with pytest.raises(StorageError, match="unavailable"):
        store.recent()
    with pytest.raises(StorageError, match="unavailable"):
        store.get("request-000001")
    with pytest.raises(StorageError, match="could not be cleared"):
        store.clear()


def test_an_alias_missing_from_caches_is_a_storage_error() -> None:
    store = CacheStorage(alias="nowhere")
    with pytest.raises(StorageError, match="no alias 'nowhere'"):
        store.recent()
    with pytest.raises(StorageError, match="no alias 'nowhere'"):
        store.write([make_record(1)])
    store.add(make_record(2))
    assert store.flush(10.0)
    assert store.dropped() == 1


class RefusingCache(LocMemCache):
    """Like memcached when a value is too large: set_many names the keys it refused."""

    def set_many(self, data: dict[str, Any], timeout: Any = None, version: Any = None) -> list[str]:
        return list(data)


class HalfBrokenCache(LocMemCache):
    """A batch read fails on a bad value, then the connection drops."""

    def get_many(self, keys: Any, version: Any = None) -> dict[str, Any]:
        raise ValueError("unreadable value")

    def get(self, key: str, default: Any = None, version: Any = None) -> Any:
        if key.endswith(":n"):
            return super().get(key, default, version)
        raise ConnectionResetError("connection reset by peer")

    def delete_many(self, keys: Any, version: Any = None) -> None:
        raise ConnectionResetError("connection reset by peer")


@pytest.fixture
def odd_caches() -> Iterator[None]:
    odd = {
        "refusing": {"BACKEND": f"{__name__}.RefusingCache", "LOCATION": "refusing"},
        "half-broken": {"BACKEND": f"{__name__}.HalfBrokenCache", "LOCATION": "half-broken"},
    }
    with override_settings(CACHES={**settings.CACHES, **odd}):
        yield


@pytest.mark.usefixtures("odd_caches")
def test_a_refused_write_is_a_storage_error() -> None:
    store = CacheStorage(alias="refusing", prefix="qltest")
    with pytest.raises(StorageError, match=r"the cache refused qltest:slot:1, qltest:owner:1"):
        store.write([make_record(1)])
    assert store.recent() == []


@pytest.mark.usefixtures("odd_caches")
def test_a_connection_lost_while_reading_is_a_storage_error() -> None:
    store = CacheStorage(alias="half-broken", prefix="qltest")
    caches["half-broken"].set("qltest:n", 3)
    with pytest.raises(StorageError, match="unavailable: connection reset"):
        store.recent()
    with pytest.raises(StorageError, match="could not be cleared: connection reset"):
        CacheStorage(alias="half-broken", prefix="qltest", size=0).clear()


@pytest.fixture
def silent_server() -> Iterator[tuple[int, list[socket.socket]]]:
    """A loopback port that accepts connections and never answers."""
    listener = socket.create_server(("127.0.0.1", 0))
    # A blocked accept() outlives close(); a short timeout lets it notice.
    listener.settimeout(0.05)
    accepted: list[socket.socket] = []
    done = threading.Event()

    def accept() -> None:
        while not done.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], accepted
    finally:
        done.set()
        thread.join(timeout=5)
        listener.close()
        for connection in accepted:
            connection.close()


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll ``condition`` (set by another thread) until true or ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_a_slow_server_never_holds_a_request_and_what_it_cannot_take_is_counted(
    silent_server: tuple[int, list[socket.socket]],
) -> None:
    port, accepted = silent_server
    slow = {
        **CLOSED_REDIS,
        "LOCATION": f"redis://127.0.0.1:{port}/0",
        "OPTIONS": {"socket_timeout": 0.2},
    }
    with override_settings(CACHES={**settings.CACHES, "slow": slow}):
        store = CacheStorage(alias="slow", prefix="qltest")
        store.queue_size = 5
        store.read_timeout = 0.3
        started = time.perf_counter()
        for number in range(20):
            store.add(make_record(number))
        handed_over = time.perf_counter() - started
        # Twenty records handed over without one round trip: a write that
        # waited for this server would take its 0.2 s socket timeout.
        assert handed_over < 0.2, handed_over
        assert store.flush(10.0)
        assert wait_until(lambda: len(accepted) >= 1)
        # The first batch timed out, later ones found writes paused (no
        # second connection) or the queue full: none stored, all counted.
        assert len(accepted) == 1
        assert store.dropped() == 20
        # Reads still ask, so a staff page tells the truth.
        with pytest.raises(StorageError, match="unavailable"):
            store.recent()


# -- any cache with the portable API ----------------------------------------


def test_works_on_any_cache_with_atomic_incr() -> None:
    with override_settings(CACHES={**settings.CACHES, "local": LOCMEM}):
        store = CacheStorage(size=3, alias="local", prefix="qltest")
        for number in range(1, 6):
            store.add(make_record(number))
        assert ids(store.recent()) == ["request-000005", "request-000004", "request-000003"]
        assert store.get("request-000004") == make_record(4)
        store.clear()
        assert store.recent() == []


# -- bounded size -------------------------------------------------------------


def stored_size(store: CacheStorage) -> int:
    """Bytes in the slot of the first record written."""
    return len(caches[store.alias].get(f"{store.prefix}:slot:1"))


@pytest.fixture
def local_store() -> Iterator[CacheStorage]:
    with override_settings(CACHES={**settings.CACHES, "local": LOCMEM}):
        yield CacheStorage(
            size=3, alias="local", prefix=f"qltest{uuid.uuid4().hex}", max_record_bytes=8000
        )


def test_a_record_that_fits_is_kept_whole(local_store: CacheStorage) -> None:
    record = make_record(1, queries=10)
    local_store.add(record)
    assert local_store.get(record.id) == record


def test_a_record_too_large_loses_its_last_queries(local_store: CacheStorage) -> None:
    record = make_record(1, queries=100)
    record.truncated = 5  # MAX_QUERIES_PER_REQUEST already stopped some
    assert len(json.dumps(record.to_dict())) > 8000
    local_store.add(record)
    stored = local_store.get(record.id)
    assert stored is not None
    kept = len(stored.queries)
    assert 0 < kept < 100
    assert [query.index for query in stored.queries] == list(range(kept))
    assert stored.truncated == 5 + 100 - kept
    # What the headers said stays true; the groups still count every query.
    assert stored.query_count == 100
    assert stored.n_plus_one[0].count == 100
    assert stored.n_plus_one[0].query_indexes == list(range(kept))
    assert stored.duplicates[0].query_indexes == list(range(kept))
    assert stored_size(local_store) <= 8000 + len('{"seq":1,"v":2,"record":}')
    # The caller's record is untouched: the response's headers come from it.
    assert len(record.queries) == 100


def test_only_as_many_queries_go_as_needed(local_store: CacheStorage) -> None:
    record = make_record(1, queries=100)
    local_store.add(record)
    stored = local_store.get(record.id)
    assert stored is not None
    one_more = {
        **stored.to_dict(),
        "queries": [q.to_dict() for q in record.queries[: len(stored.queries) + 1]],
    }
    assert len(json.dumps(one_more, separators=(",", ":"))) > 8000


def test_huge_group_sql_is_shortened_when_no_query_fits(local_store: CacheStorage) -> None:
    record = make_record(1, queries=3, sql="SELECT " + "x, " * 5000 + "1")
    local_store.add(record)
    stored = local_store.get(record.id)
    assert stored is not None
    assert stored.queries == []
    assert stored.truncated == 3
    assert stored.n_plus_one[0].sample_sql.endswith(" ...")
    assert len(stored.n_plus_one[0].sample_sql) < 2100
    assert stored.n_plus_one[0].suggestion == 'select_related("author")'


def test_a_record_that_cannot_fit_is_logged_and_counted_not_silently_lost(
    local_store: CacheStorage, caplog: pytest.LogCaptureFixture
) -> None:
    record = make_record(1)
    record.path = "/" + "p" * 9000
    with caplog.at_level(logging.WARNING, logger="querylens"):
        assert local_store.write([record]) == 0
        stored(local_store, record)
    assert local_store.get(record.id) is None
    assert local_store.dropped() == 1
    (first, second) = [r for r in caplog.records if r.name == "querylens"]
    assert first.getMessage() == "querylens could not store request request-000001"
    assert "does not fit in 8000 bytes" in str(first.exc_info[1])  # type: ignore[index]
    assert second.getMessage() == first.getMessage()


# -- through the middleware -------------------------------------------------


@pytest.fixture
def fresh_warning_window(monkeypatch: pytest.MonkeyPatch) -> None:
    # The middleware warns at most once a minute per process; start a window.
    monkeypatch.setattr(querylens.lifecycle, "_last_storage_warning", float("-inf"))


@pytest.mark.usefixtures("library", "closed_cache", "fresh_warning_window")
def test_requests_succeed_and_one_warning_is_logged_when_redis_is_down(
    client: Client, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings.QUERYLENS = {"STORAGE": CACHE_STORAGE, "CACHE_ALIAS": "down", "HEADERS": "always"}
    with caplog.at_level(logging.WARNING, logger="querylens"):
        responses = [client.get("/fk_loop/") for _ in range(3)]
        assert get_storage().flush(10.0)
    assert [response.status_code for response in responses] == [200, 200, 200]
    assert responses[0].content.decode() == ", ".join(
        ["Author 0"] * 2 + ["Author 1"] * 2 + ["Author 2"] * 2
    )
    assert all(response["X-QueryLens-Queries"] == "7" for response in responses)
    warnings = [r for r in caplog.records if r.name == "querylens" and r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].getMessage().startswith("querylens could not store ")
    assert (
        warnings[0]
        .getMessage()
        .endswith("request record(s); they are counted as dropped (logged once a minute)")
    )
    assert warnings[0].exc_info is not None
    assert warnings[0].exc_info[0] is StorageError
    assert get_storage().dropped() == 3


@pytest.mark.usefixtures("closed_cache")
def test_the_admin_pages_say_the_storage_is_unavailable(
    admin_client: Client, settings: Any
) -> None:
    settings.QUERYLENS = {"STORAGE": CACHE_STORAGE, "CACHE_ALIAS": "down"}
    listing = admin_client.get(reverse("querylens:requests"))
    assert listing.status_code == 503
    assert "Storage unavailable" in listing.content.decode()
    url = reverse("querylens:request", kwargs={"request_id": "request-000001"})
    exported = admin_client.get(url, {"format": "json"})
    assert exported.status_code == 503
    assert "unavailable" in exported.json()["error"]


@pytest.mark.redis
@pytest.mark.usefixtures("library")
def test_the_middleware_stores_each_request_in_redis(
    client: Client, settings: Any, prefix: str
) -> None:
    settings.QUERYLENS = {
        "STORAGE": CACHE_STORAGE,
        "CACHE_ALIAS": "redis",
        "CACHE_KEY_PREFIX": prefix,
        "CACHE_TIMEOUT": 300,
        "HEADERS": "always",
    }
    try:
        fk = client.get("/fk_loop/")
        fixed = client.get("/fk_loop_fixed/")
        assert isinstance(get_storage(), CacheStorage)
        assert ids(get_storage().recent()) == [
            fixed["X-QueryLens-Request"],
            fk["X-QueryLens-Request"],
        ]
        record = get_storage().get(fk["X-QueryLens-Request"])
        assert record is not None
        assert (record.path, record.status, record.query_count) == ("/fk_loop/", 200, 7)
        assert record.n_plus_one[0].relation == "tests.Book.author"
        assert record.n_plus_one[0].suggestion == 'select_related("author")'
    finally:
        caches["redis"].delete_many(redis_keys(prefix))


# -- system checks --------------------------------------------------------------


@pytest.fixture(autouse=True)
def _no_worker_count_in_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("WEB_CONCURRENCY", "UVICORN_WORKERS", "GUNICORN_CMD_ARGS"):
        monkeypatch.delenv(variable, raising=False)


def check_ids() -> list[str]:
    return [message.id for message in run_checks() if str(message.id).startswith("querylens.")]


def test_cache_storage_with_a_missing_alias_is_e017(settings: Any) -> None:
    settings.QUERYLENS = {"STORAGE": CACHE_STORAGE, "CACHE_ALIAS": "redsi"}
    messages = [m for m in run_checks() if m.id == "querylens.E017"]
    assert len(messages) == 1
    assert "'redsi'" in messages[0].msg
    assert "'default'" in messages[0].msg


def test_cache_storage_with_a_known_alias_passes(settings: Any) -> None:
    settings.QUERYLENS = {"STORAGE": CACHE_STORAGE, "CACHE_ALIAS": "default"}
    assert check_ids() == []


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("WEB_CONCURRENCY", "4"),
        ("UVICORN_WORKERS", "2"),
        ("GUNICORN_CMD_ARGS", "--bind 0.0.0.0:8000 --workers 3"),
        ("GUNICORN_CMD_ARGS", "--workers=3"),
        ("GUNICORN_CMD_ARGS", "-w 3 --threads 2"),
        ("GUNICORN_CMD_ARGS", "-w3"),
    ],
)
def test_memory_storage_with_several_workers_is_w003(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    messages = [m for m in run_checks() if m.id == "querylens.W003"]
    assert len(messages) == 1
    assert variable in messages[0].msg
    assert "CacheStorage" in (messages[0].hint or "")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("WEB_CONCURRENCY", "1"),
        ("WEB_CONCURRENCY", "many"),
        ("GUNICORN_CMD_ARGS", "--workers 1 --threads 8"),
        ("GUNICORN_CMD_ARGS", "--workers"),
        ("GUNICORN_CMD_ARGS", "--bind 'unclosed"),
    ],
)
def test_one_worker_or_an_unreadable_count_is_no_w003(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    assert "querylens.W003" not in check_ids()


def test_cache_storage_with_several_workers_is_no_w003(
    monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    monkeypatch.setenv("WEB_CONCURRENCY", "4")
    settings.QUERYLENS = {"STORAGE": CACHE_STORAGE}
    assert check_ids() == []


@pytest.mark.parametrize(
    "querylens",
    [
        ["not", "a", "dict"],
        {"STORAGE": "querylens.storage.NoSuchStorage"},
        {"STORAGE": 42},
        {"STORAGE": "querylens.conf.conf"},
    ],
    ids=["not a dict", "unimportable", "not a string", "not a class"],
)
def test_a_broken_setting_is_left_to_its_own_check(
    settings: Any, monkeypatch: pytest.MonkeyPatch, querylens: Any
) -> None:
    monkeypatch.setenv("WEB_CONCURRENCY", "4")
    settings.QUERYLENS = querylens
    found = check_ids()
    assert "querylens.E017" not in found
    assert "querylens.W003" not in found
    assert {"querylens.E001", "querylens.E011"} & set(found)


# -- a shared buffer holding what this version cannot read ---------------------


@pytest.mark.redis
@pytest.mark.django_db
def test_unreadable_records_are_skipped_and_counted_on_the_pages(
    settings: Any, prefix: str
) -> None:
    from tests.helpers import querylens_staff

    settings.QUERYLENS = {
        "STORAGE": CACHE_STORAGE,
        "CACHE_ALIAS": "redis",
        "CACHE_KEY_PREFIX": prefix,
    }
    store = get_storage()
    assert isinstance(store, CacheStorage)
    try:
        stored(store, *(make_record(number) for number in range(1, 6)))
        older = make_record(6).to_dict()
        del older["queries"][0]["fingerprint"]  # a shape from another version
        cache = caches["redis"]
        cache.set(f"{prefix}:slot:2", "not json at all")
        cache.set(f"{prefix}:slot:3", json.dumps({"seq": 3, "record": ["a", "list"]}))
        cache.set(f"{prefix}:slot:4", json.dumps({"seq": 4, "record": older}))
        records, skipped = store.recent_and_skipped()
        assert ids(records) == ["request-000005", "request-000001"]
        assert skipped == 3
        client = Client()
        client.force_login(querylens_staff("reader"))
        for url in (reverse("querylens:hotspots"), reverse("querylens:requests")):
            response = client.get(url)
            assert response.status_code == 200
            assert "3 stored records were unreadable" in response.content.decode()
    finally:
        caches["redis"].delete_many(redis_keys(prefix))


# -- a cache server that accepts connections and never answers ----------------


@pytest.mark.usefixtures("library", "fresh_warning_window")
def test_a_silent_cache_server_never_holds_a_request(
    client: Client,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
    silent_server: tuple[int, list[socket.socket]],
) -> None:
    port, accepted = silent_server
    # No socket timeout: the project's own CACHES setting may not have one,
    # and the writer thread then waits for ever; requests never do.
    silent = {**CLOSED_REDIS, "LOCATION": f"redis://127.0.0.1:{port}/0", "OPTIONS": {}}
    waits: list[float] = []
    add = CacheStorage.add

    def timed_add(self: CacheStorage, record: RequestRecord) -> None:
        started = time.perf_counter()
        try:
            add(self, record)
        finally:
            waits.append(time.perf_counter() - started)

    monkeypatch.setattr(CacheStorage, "add", timed_add)
    monkeypatch.setattr(CacheStorage, "queue_size", 2)
    with override_settings(CACHES={**settings.CACHES, "silent": silent}):
        settings.QUERYLENS = {
            "STORAGE": CACHE_STORAGE,
            "CACHE_ALIAS": "silent",
            "HEADERS": "always",
        }
        for _ in range(6):
            response = client.get("/fk_loop/")
            assert response.status_code == 200
            assert response["X-QueryLens-Queries"] == "7"
        assert wait_until(lambda: len(accepted) >= 1)
        # One batch (at most a queue's worth) is stuck on the server, two
        # records at most wait in the queue, the others were dropped: memory
        # stays bounded.
        writer = get_storage()._writer_instance  # type: ignore[attr-defined]
        assert writer.queue.qsize() <= 2
        assert writer.unreported_drops >= 6 - 2 - 2
    assert len(waits) == 6
    assert all(wait < 0.05 for wait in waits), waits


@pytest.mark.django_db
def test_a_silent_cache_server_gives_the_pages_a_503_within_the_read_bound(
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
    silent_server: tuple[int, list[socket.socket]],
) -> None:
    from tests.helpers import querylens_staff

    port, _accepted = silent_server
    monkeypatch.setattr(CacheStorage, "read_timeout", 0.5)
    silent = {**CLOSED_REDIS, "LOCATION": f"redis://127.0.0.1:{port}/0", "OPTIONS": {}}
    client = Client()
    client.force_login(querylens_staff("reader"))
    with override_settings(CACHES={**settings.CACHES, "silent": silent}):
        settings.QUERYLENS = {"STORAGE": CACHE_STORAGE, "CACHE_ALIAS": "silent"}
        started = time.perf_counter()
        response = client.get(reverse("querylens:requests"))
        elapsed = time.perf_counter() - started
    assert response.status_code == 503
    assert "Storage unavailable" in response.content.decode()
    assert elapsed < 0.5 + 1.0


@pytest.mark.redis
@pytest.mark.django_db
def test_records_the_storage_could_not_take_are_counted_on_the_pages(
    settings: Any, prefix: str
) -> None:
    from tests.helpers import querylens_staff

    settings.QUERYLENS = {
        "STORAGE": CACHE_STORAGE,
        "CACHE_ALIAS": "redis",
        "CACHE_KEY_PREFIX": prefix,
    }
    store = get_storage()
    assert isinstance(store, CacheStorage)
    try:
        store.queue_size = 1
        # The writer thread is busy with nothing yet: hold it on a lock so the
        # queue stays full while three more records arrive.
        block = threading.Event()
        write = store.write
        store.write = lambda records: block.wait(10) and write(records)  # type: ignore[method-assign]
        for number in range(1, 6):
            store.add(make_record(number))
        block.set()
        assert store.flush(10.0)
        stored_ids = ids(store.recent())
        assert 1 <= len(stored_ids) <= 2
        assert store.dropped() == 5 - len(stored_ids)
        client = Client()
        client.force_login(querylens_staff("reader"))
        text = client.get(reverse("querylens:requests")).content.decode()
        assert f"{5 - len(stored_ids)} request records were dropped" in " ".join(text.split())
        report = client.get(reverse("querylens:hotspots"), {"format": "json"}).json()
        assert report["dropped"] == 5 - len(stored_ids)
    finally:
        caches["redis"].delete_many(redis_keys(prefix))


@pytest.mark.redis
def test_a_batch_is_two_round_trips_to_redis(
    storage: CacheStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One INCRBY claims the batch's sequence numbers, one pipeline writes it."""
    from redis.connection import AbstractConnection

    storage.write([make_record(0)])  # connects (and says hello) before counting
    sent = []
    original = AbstractConnection.send_packed_command

    def counted(connection: Any, command: Any, check_health: bool = True) -> None:
        sent.append(command)
        original(connection, command, check_health)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counted)
    records = [make_record(n) for n in (1, 2, 3)]
    assert storage.write(records) == 3
    monkeypatch.undo()
    assert len(sent) == 2
    assert ids(storage.recent()) == ids([*reversed(records), make_record(0)])
    assert caches["redis"].get(f"{storage.prefix}:n") == 4
