"""The in-process ring buffer."""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

from querylens.records import RequestRecord
from querylens.storage import MemoryStorage, get_storage


def make(request_id: str) -> RequestRecord:
    return RequestRecord(
        id=request_id,
        method="GET",
        path="/",
        view=None,
        status=200,
        started_at=dt.datetime.now(dt.timezone.utc),
        duration_ms=1.0,
        db_time_ms=0.5,
        query_count=0,
        duplicate_count=0,
    )


def test_keeps_the_newest_records_first() -> None:
    storage = MemoryStorage(size=3)
    for n in range(5):
        storage.add(make(f"r{n}"))
    assert [r.id for r in storage.recent()] == ["r4", "r3", "r2"]
    assert [r.id for r in storage.recent(2)] == ["r4", "r3"]
    assert storage.get("r4") is not None
    assert storage.get("r0") is None  # pushed out


def test_clear_empties_the_buffer() -> None:
    storage = MemoryStorage(size=3)
    storage.add(make("a"))
    storage.clear()
    assert storage.recent() == []


def test_concurrent_writers_lose_nothing_within_capacity() -> None:
    storage = MemoryStorage(size=1000)

    def write(worker: int) -> None:
        for n in range(100):
            storage.add(make(f"w{worker}-{n}"))

    threads = [threading.Thread(target=write, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ids = [r.id for r in storage.recent()]
    assert len(ids) == len(set(ids)) == 800


def test_buffer_size_setting_bounds_the_default_storage(settings: Any) -> None:
    settings.QUERYLENS = {"BUFFER_SIZE": 2}
    storage = get_storage()
    for n in range(4):
        storage.add(make(f"r{n}"))
    assert [r.id for r in get_storage().recent()] == ["r3", "r2"]


def test_unrelated_setting_changes_keep_the_buffer(settings: Any) -> None:
    settings.QUERYLENS = {"BUFFER_SIZE": 5}
    get_storage().add(make("kept"))
    settings.QUERYLENS = {"BUFFER_SIZE": 5, "HEADERS": "always"}
    assert [r.id for r in get_storage().recent()] == ["kept"]
