"""Several processes, one buffer: a real gunicorn with four workers.

Each test migrates a fresh SQLite file, starts gunicorn on a free loopback port
serving tests.multiprocess_app (the tests' views, CacheStorage on Redis), sends
concurrent requests from a thread pool, and reads the shared buffer back from
this process. Every server is stopped in ``finally``; every wait is bounded.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.cache import caches
from django.test import Client, override_settings
from django.urls import reverse

from querylens.records import RequestRecord
from querylens.storage import CacheStorage, StorageError
from tests.gunicorn_server import (
    CONCURRENCY,
    WORKERS,
    Reply,
    Server,
    fetch,
    fetch_many,
    free_port,
    prepare_database,
)

pytestmark = [pytest.mark.redis, pytest.mark.slow]

REQUIRE_SERVICES = os.environ.get("QUERYLENS_REQUIRE_SERVICES") == "1"


@pytest.fixture
def prefix() -> str:
    return f"qltest{uuid.uuid4().hex}"


@pytest.fixture(scope="session")
def prepared_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file with make_library()'s data, made once per run."""
    return prepare_database(tmp_path_factory.mktemp("multiprocess") / "db.sqlite3")


@pytest.fixture
def serve(tmp_path: Path, prefix: str, prepared_db: Path) -> Iterator[Callable[..., Server]]:
    """Start a server with ``serve(**environ)``; every one is stopped afterwards."""
    started: list[Server] = []
    database = shutil.copy(prepared_db, tmp_path / "db.sqlite3")

    def start(**environ: str) -> Server:
        server = Server(
            tmp_path / f"gunicorn-{len(started)}.log",
            {
                "QUERYLENS_MP_DB": str(database),
                "QUERYLENS_MP_PREFIX": prefix,
                **environ,
            },
        )
        started.append(server)
        server.start()
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()


def delete_prefix(alias: str, prefix: str) -> None:
    cache = caches[alias]
    client = cache._cache.get_client(write=True)  # type: ignore[attr-defined]
    keys = list(client.scan_iter(f"{cache.make_key(prefix)}:*"))
    if keys:
        client.delete(*keys)


@pytest.fixture
def shared_buffer(prefix: str) -> Iterator[Callable[[int], CacheStorage]]:
    """A reader of the buffer the server writes (the "redis" alias, same prefix)."""

    def reader(size: int) -> CacheStorage:
        return CacheStorage(size=size, alias="redis", prefix=prefix)

    try:
        yield reader
    finally:
        delete_prefix("redis", prefix)


def eventually(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    """``check()``'s result once it stops failing, within ``timeout`` seconds.

    Each worker hands its records to a writer thread and answers at once:
    they reach Redis a few milliseconds after the response. Waits for that,
    bounded; the last failure is raised if it never comes.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except (AssertionError, StorageError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def written(buffer: CacheStorage, total: int) -> None:
    """Wait until the workers claimed ``total`` sequence numbers and wrote them."""

    def check() -> None:
        assert caches[buffer.alias].get(f"{buffer.prefix}:n") == total
        assert buffer.recent(1), "the newest slot is not written yet"

    eventually(check)


def assert_whole(records: list[RequestRecord], replies: dict[str, Reply]) -> None:
    """Each record is the one its response described, complete (not torn)."""
    for record in records:
        reply = replies[record.id]
        assert (record.method, record.path, record.status) == ("GET", "/fk_loop/", 200)
        assert str(record.query_count) == reply.queries == "7"
        assert str(record.duplicate_count) == reply.duplicates
        assert len(record.queries) == 7
        assert record.n_plus_one[0].relation == "tests.Book.author"


def test_every_worker_writes_into_one_buffer_exactly_once(
    serve: Callable[..., Server], shared_buffer: Callable[[int], CacheStorage]
) -> None:
    server = serve(QUERYLENS_MP_BUFFER_SIZE="300")
    replies = fetch_many(server.port, 200)
    assert [reply.status for reply in replies] == [200] * 200
    by_id = {reply.request_id: reply for reply in replies if reply.request_id}
    assert len(by_id) == 200

    buffer = shared_buffer(300)
    written(buffer, 200)
    records = buffer.recent()
    stored = [record.id for record in records]
    # Every request exactly once, and nothing else.
    assert sorted(stored) == sorted(by_id)
    assert_whole(records, by_id)
    pids = {by_id[request_id].pid for request_id in stored}
    assert len(pids) > 1, f"all {len(stored)} records came from one process"


def test_the_admin_pages_of_any_process_see_every_worker(
    serve: Callable[..., Server], prefix: str, admin_client: Client, settings: Any
) -> None:
    server = serve(QUERYLENS_MP_BUFFER_SIZE="100")
    replies = fetch_many(server.port, 40)
    # This process is one more web server reading the same buffer.
    settings.QUERYLENS = {
        "STORAGE": "querylens.storage.CacheStorage",
        "CACHE_ALIAS": "redis",
        "CACHE_KEY_PREFIX": prefix,
        "BUFFER_SIZE": 100,
    }
    try:
        written(CacheStorage(size=100, alias="redis", prefix=prefix), 40)
        for reply in replies[:5]:
            url = reverse("querylens:request", kwargs={"request_id": reply.request_id})
            exported = admin_client.get(url, {"format": "json"}).json()
            assert exported["id"] == reply.request_id
            assert exported["path"] == "/fk_loop/"
            assert exported["query_count"] == 7
            assert exported["n_plus_one"][0]["suggestion"] == 'select_related("author")'
        listing = admin_client.get(reverse("querylens:requests"))
        assert listing.status_code == 200
        assert all(reply.request_id in listing.content.decode() for reply in replies)
        assert len({reply.pid for reply in replies}) > 1
    finally:
        delete_prefix("redis", prefix)


def test_a_full_buffer_keeps_exactly_the_newest_requests(
    serve: Callable[..., Server], shared_buffer: Callable[[int], CacheStorage]
) -> None:
    server = serve(QUERYLENS_MP_BUFFER_SIZE="50")
    buffer = shared_buffer(50)
    older = fetch_many(server.port, 150)
    # "Newest" is in the order records reach Redis: the older ones first.
    written(buffer, 150)
    newer = fetch_many(server.port, 50)
    assert {reply.status for reply in older + newer} == {200}
    by_id = {reply.request_id: reply for reply in older + newer}

    written(buffer, 200)
    records = buffer.recent()
    stored = [record.id for record in records]
    assert len(stored) == len(set(stored)) == 50
    assert set(stored) == {reply.request_id for reply in newer}
    assert_whole(records, by_id)
    assert len({by_id[request_id].pid for request_id in stored}) > 1


def redis_server_command(port: int) -> list[str]:
    # Loopback only, nothing on disk.
    return [
        "redis-server",
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
    ]


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """A redis-server of this test's own (no disk), so it can be killed."""
    if shutil.which("redis-server") is None:
        message = "redis-server is not installed (apt-get install redis-server)"
        if REQUIRE_SERVICES:
            pytest.fail(message)
        pytest.skip(message)
    port = free_port()
    process = subprocess.Popen(
        redis_server_command(port),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError("redis-server did not start") from None
                time.sleep(0.05)
        yield port, process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=15)


def test_requests_succeed_while_redis_dies_and_recording_resumes(
    serve: Callable[..., Server],
    private_redis: tuple[int, subprocess.Popen[bytes]],
    prefix: str,
) -> None:
    port, redis_process = private_redis
    url = f"redis://127.0.0.1:{port}/0"
    server = serve(QUERYLENS_MP_REDIS_URL=url, QUERYLENS_MP_BUFFER_SIZE="500")
    private = {
        **settings.CACHES["redis"],
        "LOCATION": url,
        "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
    }
    with override_settings(CACHES={**settings.CACHES, "private": private}):
        buffer = CacheStorage(size=500, alias="private", prefix=prefix)
        before = fetch_many(server.port, 40)
        written(buffer, 40)
        assert {reply.request_id for reply in before} == {record.id for record in buffer.recent()}

        # Kill Redis once a third of the next batch has been answered.
        replies: list[Reply] = []
        with ThreadPoolExecutor(CONCURRENCY) as pool:
            futures = [pool.submit(fetch, server.port, "/fk_loop/") for _ in range(150)]
            for future in as_completed(futures):
                replies.append(future.result())
                if len(replies) == 50:
                    redis_process.kill()
                    redis_process.wait(timeout=15)
        assert [reply.status for reply in replies] == [200] * 150
        assert all(reply.queries == "7" for reply in replies)
        with pytest.raises(StorageError, match="unavailable"):
            buffer.recent()

        # One warning per worker at most (rate-limited), not one per request.
        def warned() -> list[str]:
            found = re.findall(
                r"pid=(\d+) WARNING querylens: querylens could not store \d+ request record",
                server.log_text(),
            )
            assert 1 <= len(found) <= WORKERS, server.log_text()[-3000:]
            return found

        warnings = eventually(warned)
        assert len(set(warnings)) == len(warnings)

        # Redis comes back (empty): within a few retry_after windows the
        # workers store requests again, without a restart.
        revived = subprocess.Popen(
            redis_server_command(port),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 4 * CacheStorage.retry_after
            stored: set[str] = set()
            sent: set[str] = set()
            while not stored & sent and time.monotonic() < deadline:
                sent.update(reply.request_id or "" for reply in fetch_many(server.port, 8))
                with contextlib.suppress(StorageError):  # not listening yet
                    stored = {record.id for record in buffer.recent()}
                time.sleep(0.2)
            assert stored & sent, "no request was stored after Redis came back"
        finally:
            revived.kill()
            revived.wait(timeout=15)


def test_a_closed_port_costs_nothing_but_a_warning(serve: Callable[..., Server]) -> None:
    server = serve(QUERYLENS_MP_REDIS_URL="redis://127.0.0.1:1/0")
    replies = fetch_many(server.port, 60)
    assert [reply.status for reply in replies] == [200] * 60
    assert len({reply.request_id for reply in replies}) == 60
    assert all(reply.queries == "7" for reply in replies)
    warnings = re.findall(
        r"pid=(\d+) WARNING querylens: querylens could not store", server.log_text()
    )
    assert 1 <= len(warnings) <= WORKERS


def test_a_streamed_response_is_recorded_when_the_server_closes_it(
    serve: Callable[..., Server], shared_buffer: Callable[[int], CacheStorage]
) -> None:
    server = serve()
    reply = fetch(server.port, "/streamed_csv/")
    assert reply.status == 200
    assert reply.request_id is not None
    assert reply.queries is None  # not known when the headers left
    buffer = shared_buffer(200)
    # The worker stores the record when gunicorn closes the response, just
    # after the last byte reached us: poll for it, bounded.
    deadline = time.monotonic() + 10
    record = buffer.get(reply.request_id)
    while record is None and time.monotonic() < deadline:
        time.sleep(0.05)
        record = buffer.get(reply.request_id)
    assert record is not None, "the streamed request was never stored"
    assert record.query_count == 7
    assert [group.relation for group in record.n_plus_one] == ["tests.Book.author"]
