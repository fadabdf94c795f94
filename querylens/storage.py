"""Where request records are kept: a bounded ring buffer.

``MemoryStorage`` (the default) keeps the newest ``BUFFER_SIZE`` records in
this process. ``get_storage()`` returns the configured backend, built once per
settings value.
"""

from __future__ import annotations

import threading
from collections import deque

from django.utils.module_loading import import_string

from querylens.conf import conf
from querylens.records import RequestRecord


class StorageError(Exception):
    """The storage backend could not be reached or gave something unreadable."""


class BaseStorage:
    """What every storage backend provides."""

    def add(self, record: RequestRecord) -> None:
        raise NotImplementedError

    def get(self, request_id: str) -> RequestRecord | None:
        raise NotImplementedError

    def recent(self, limit: int | None = None) -> list[RequestRecord]:
        """The newest records first, at most ``limit``."""
        raise NotImplementedError

    def clear(self) -> None:
        raise NotImplementedError


class MemoryStorage(BaseStorage):
    """A thread-safe ring buffer in this process's memory."""

    def __init__(self, size: int | None = None) -> None:
        self.size = size if size is not None else conf.BUFFER_SIZE
        self._records: deque[RequestRecord] = deque(maxlen=self.size)
        self._lock = threading.Lock()

    def add(self, record: RequestRecord) -> None:
        with self._lock:
            self._records.append(record)

    def get(self, request_id: str) -> RequestRecord | None:
        with self._lock:
            for record in self._records:
                if record.id == request_id:
                    return record
        return None

    def recent(self, limit: int | None = None) -> list[RequestRecord]:
        with self._lock:
            records = list(self._records)
        records.reverse()
        return records if limit is None else records[:limit]

    def clear(self) -> None:
        with self._lock:
            self._records.clear()


_storage: BaseStorage | None = None
_storage_key: tuple[object, ...] = ()
_storage_lock = threading.Lock()


def _settings_key() -> tuple[object, ...]:
    return (conf.STORAGE, conf.BUFFER_SIZE, conf.CACHE_ALIAS, conf.CACHE_KEY_PREFIX, conf.CACHE_TIMEOUT)


def get_storage() -> BaseStorage:
    """The configured storage backend, one per process.

    It is rebuilt only when a setting it depends on changes, so a buffer
    survives unrelated changes to ``QUERYLENS``.
    """
    global _storage, _storage_key
    key = _settings_key()
    storage = _storage
    if storage is None or key != _storage_key:
        with _storage_lock:
            if _storage is None or key != _storage_key:
                backend = import_string(conf.STORAGE)
                _storage = backend()
                _storage_key = key
            storage = _storage
    return storage


def reset_storage() -> None:
    """Forget the storage instance so the next call builds it from settings."""
    global _storage
    with _storage_lock:
        _storage = None
