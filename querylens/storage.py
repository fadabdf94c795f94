"""Where request records are kept: a bounded ring buffer.

``MemoryStorage`` (the default) keeps the newest ``BUFFER_SIZE`` records in
this process. ``CacheStorage`` keeps them in a Django cache (Redis, memcached)
shared by every process. ``get_storage()`` returns the configured backend,
built once per settings value.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import queue
import re
import threading
import time
from bisect import bisect_right
from collections import Counter, deque
from collections.abc import Callable
from itertools import accumulate
from typing import Any

from django.core.cache import InvalidCacheBackendError, caches
from django.core.cache.backends.base import BaseCache
from django.core.cache.backends.redis import RedisCache
from django.utils.module_loading import import_string

from querylens.conf import conf
from querylens.records import CallSite, QueryRecord, RequestRecord

logger = logging.getLogger("querylens")
#: Seconds between two warnings of the writer thread.
WARN_EVERY = 60.0


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

    def recent_and_skipped(self, limit: int | None = None) -> tuple[list[RequestRecord], int]:
        """``recent()``, and how many stored records could not be read.

        A shared store can hold records it cannot read: damaged, or written
        by another version of querylens. They are skipped; the pages say how
        many.
        """
        return self.recent(limit), 0

    def dropped(self) -> int:
        """Records that were never stored: a shared store too slow or down to take them."""
        return 0

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until this process's records handed to ``add()`` are stored; whether they are."""
        return True

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
    return (
        conf.STORAGE,
        conf.BUFFER_SIZE,
        conf.CACHE_ALIAS,
        conf.CACHE_KEY_PREFIX,
        conf.CACHE_TIMEOUT,
    )


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


@functools.cache
def _unreachable() -> tuple[type[BaseException], ...]:
    # Exceptions meaning "the cache server did not answer", as opposed to "it
    # answered something unreadable". Redis's are not OSErrors. Looked up on
    # first use: a process storing in memory never imports redis for us.
    errors: list[type[BaseException]] = [OSError]
    try:
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError
    except ImportError:  # pragma: no cover - redis is optional
        pass
    else:
        errors += [RedisConnectionError, RedisTimeoutError]
    return tuple(errors)


class CacheTimeout(Exception):
    """The cache did not answer within querylens's bound."""


class _BoundedCalls:
    """Runs cache reads on a few daemon threads; the caller waits at most a bound.

    A cache server that accepts connections and never answers would hold the
    admin page reading it for as long as the client's socket timeout, which
    querylens does not control (it is the project's ``CACHES`` setting). Here
    the page waits ``timeout`` at most; the stuck call goes on in its
    thread. (Writes never make a request wait: see ``_Writer``.) Each thread keeps its own cache client (``caches`` is per
    thread), so connections are reused. A full backlog is refused at once.
    Threads are started per process, so a fork (gunicorn's ``--preload``)
    gets its own.
    """

    def __init__(self, threads: int = 2, backlog: int = 32) -> None:
        self.threads = threads
        self.backlog = backlog
        self._queue: queue.Queue[tuple[Callable[[], Any], threading.Event, list[Any]]] | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def _work_queue(self) -> queue.Queue[tuple[Callable[[], Any], threading.Event, list[Any]]]:
        pid = os.getpid()
        work = self._queue
        if work is None or self._pid != pid:
            with self._lock:
                if self._queue is None or self._pid != pid:
                    self._queue = queue.Queue(maxsize=self.backlog)
                    for number in range(self.threads):
                        threading.Thread(
                            target=self._serve,
                            args=(self._queue,),
                            daemon=True,  # a call stuck on a dead server never blocks exit
                            name=f"querylens-storage-{number}",
                        ).start()
                    self._pid = pid
                work = self._queue
        return work

    @staticmethod
    def _serve(work: queue.Queue[tuple[Callable[[], Any], threading.Event, list[Any]]]) -> None:
        while True:
            call, done, outcome = work.get()
            try:
                outcome.append((True, call()))
            except BaseException as exc:  # handed to the caller, raised there
                outcome.append((False, exc))
            finally:
                done.set()

    def call(self, function: Callable[[], Any], timeout: float) -> Any:
        done = threading.Event()
        outcome: list[Any] = []
        try:
            self._work_queue().put_nowait((function, done, outcome))
        except queue.Full:
            raise CacheTimeout(
                f"{self.backlog} earlier cache calls are still waiting for the server"
            ) from None
        if not done.wait(timeout):
            raise CacheTimeout(f"no answer within {timeout * 1000:.0f} ms")
        succeeded, value = outcome[0]
        if succeeded:
            return value
        raise value


_calls = _BoundedCalls()
_REQUEST_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
_JSON_SEPARATORS = (",", ":")
#: Longest SQL kept in a duplicate or N+1 group once the queries are gone.
_GROUP_SQL_CHARS = 2000


class _Writer:
    """A CacheStorage's writer thread in this process, and its bounded queue.

    Requests put records in the queue and go on; the thread takes up to
    ``batch_size`` at a time, encodes them and writes them in two round
    trips. When the queue is full (the cache slower than the traffic, or
    down), new records are dropped and counted; the count is added to the
    shared one (``<prefix>:dropped``) as soon as the cache answers again.
    """

    def __init__(self, storage: CacheStorage) -> None:
        self.storage = storage
        self.pid = os.getpid()
        self.queue: queue.Queue[RequestRecord] = queue.Queue(maxsize=storage.queue_size)
        #: Records queued or being written, for ``wait_idle()``.
        self._pending = 0
        self._idle = threading.Condition()
        #: Dropped here and not yet added to the shared count.
        self.unreported_drops = 0
        self._last_warning = float("-inf")
        threading.Thread(target=self._run, daemon=True, name="querylens-writer").start()

    def submit(self, record: RequestRecord) -> bool:
        with self._idle:
            try:
                self.queue.put_nowait(record)
            except queue.Full:
                self.unreported_drops += 1
                return False
            self._pending += 1
        return True

    def wait_idle(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0 or not self._idle.wait(left):
                    return self._pending == 0
        return True

    def _run(self) -> None:
        while True:
            batch = [self.queue.get()]
            while len(batch) < self.storage.batch_size:
                try:
                    batch.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self._write(batch)
            finally:
                with self._idle:
                    self._pending -= len(batch)
                    self._idle.notify_all()

    def _write(self, batch: list[RequestRecord]) -> None:
        try:
            stored = self.storage.write(batch)
            with self._idle:
                lost = len(batch) - stored + self.unreported_drops
                self.unreported_drops = 0
            if lost:
                try:
                    self.storage._report_drops(lost)
                except Exception:
                    with self._idle:
                        self.unreported_drops += lost
        except Exception:
            with self._idle:
                self.unreported_drops += len(batch)
            now = time.monotonic()
            if now - self._last_warning >= WARN_EVERY:
                self._last_warning = now
                logger.warning(
                    "querylens could not store %d request record(s); they are counted "
                    "as dropped (logged once a minute)",
                    len(batch),
                    exc_info=True,
                )


class CacheStorage(BaseStorage):
    """A ring buffer shared by every process that uses one Django cache.

    Meant for Django's Redis backend (``django.core.cache.backends.redis``);
    memcached works too, since only the portable cache API is used. Backends
    whose ``incr`` is not atomic (database, file, local memory across
    processes) lose records under concurrency.

    Layout, under ``CACHE_KEY_PREFIX``, ``2 * size + 1`` keys at most:

    - ``<prefix>:n``: a counter; ``incr`` hands each write its own sequence
      number ``n``, so concurrent writers never share a slot;
    - ``<prefix>:slot:<n % size>``: the record as JSON, with ``n`` beside it,
      so a reader can tell a slot's current record from a stale one;
    - ``<prefix>:owner:<n % size>``: ``"<n> <request id>"``, written with the
      slot: ``get()`` reads these small values in one batch to find the slot.

    Writing happens off the request: ``add()`` queues the record for this
    process's writer thread (``_Writer``) and returns. The writer takes up to
    ``batch_size`` records at a time: one increment claims a sequence number
    for each, one ``set_many`` writes them all (on Django's Redis backend, an
    ``INCRBY`` and one pipeline: two round trips a batch). A slot holds the
    compact form (``compact()``): each call site and stack once, queries as rows.
    When the cache is slower than the traffic or down, at most
    ``queue_size`` records wait; later ones are dropped and counted
    (``dropped()``, shown on the pages). Reads are two calls: ``recent()`` the
    counter then the slots, ``get()`` the owners then one slot; a page first
    waits (``flush_timeout`` at most) for this process's queued records.

    Every error of the cache becomes ``StorageError``. After a failed write,
    writes are skipped for ``retry_after`` seconds (the records are counted
    as dropped), so a hung server costs one socket timeout per interval.
    """

    #: Records larger than this (bytes of JSON) lose their last queries.
    #: memcached refuses items over 1 MiB by default; a reader of the whole
    #: buffer fetches up to ``BUFFER_SIZE`` times this much.
    max_record_bytes = 512 * 1024
    retry_after = 5.0
    #: Records waiting for the writer thread, at most; more are dropped and counted.
    queue_size = 500
    #: Records written per round trip, at most.
    batch_size = 64
    #: Longest a page waits for the cache to hand over records (seconds).
    read_timeout = 5.0
    #: Longest a page waits for this process's queued records to be written first.
    flush_timeout = 1.0

    def __init__(
        self,
        size: int | None = None,
        *,
        alias: str | None = None,
        prefix: str | None = None,
        timeout: int | None = None,
        max_record_bytes: int | None = None,
    ) -> None:
        self.size = size if size is not None else conf.BUFFER_SIZE
        self.alias = alias if alias is not None else conf.CACHE_ALIAS
        self.prefix = prefix if prefix is not None else conf.CACHE_KEY_PREFIX
        self.timeout = timeout if timeout is not None else conf.CACHE_TIMEOUT
        if max_record_bytes is not None:
            self.max_record_bytes = max_record_bytes
        self._writes_paused_until = 0.0
        self._writer_instance: _Writer | None = None
        self._writer_lock = threading.Lock()

    # -- keys -------------------------------------------------------------

    @property
    def _counter_key(self) -> str:
        return f"{self.prefix}:n"

    @property
    def _dropped_key(self) -> str:
        return f"{self.prefix}:dropped"

    def _slot_key(self, sequence: int) -> str:
        return f"{self.prefix}:slot:{sequence % self.size}"

    def _owner_key(self, sequence: int) -> str:
        return f"{self.prefix}:owner:{sequence % self.size}"

    def _cache(self) -> BaseCache:
        # caches[...] is per thread; looking it up each time keeps this
        # instance, shared by the process's threads, safe.
        try:
            return caches[self.alias]
        except InvalidCacheBackendError as exc:
            raise StorageError(f"CACHES has no alias {self.alias!r}") from exc

    # -- writing ----------------------------------------------------------

    def add(self, record: RequestRecord) -> None:
        """Hand ``record`` to this process's writer thread; never waits for the cache.

        The request thread only checks the id and queues the record (a few
        microseconds); encoding and the round trips happen on the writer.
        A full queue (the cache slower than the traffic, or down) drops the
        record and counts it (``dropped()``): memory stays bounded.
        """
        if not _REQUEST_ID.fullmatch(record.id):
            # It becomes part of a cache key; memcached refuses odd characters.
            raise StorageError(f"request id {record.id!r} is not URL-safe")
        self._writer().submit(record)

    def flush(self, timeout: float = 5.0) -> bool:
        writer = self._writer_instance
        if writer is None or writer.pid != os.getpid():
            return True
        return writer.wait_idle(timeout)

    def dropped(self) -> int:
        """Records dropped by every process: the shared count plus this process's unreported ones."""
        writer = self._writer_instance
        local = writer.unreported_drops if writer is not None and writer.pid == os.getpid() else 0

        def read() -> int:
            value = self._cache().get(self._dropped_key)
            return value if isinstance(value, int) and not isinstance(value, bool) else 0

        try:
            shared = self._read(read)
        except Exception:
            shared = 0
        return int(shared) + local

    def _writer(self) -> _Writer:
        writer = self._writer_instance
        if writer is None or writer.pid != os.getpid():
            with self._writer_lock:
                writer = self._writer_instance
                # A fork (gunicorn --preload) inherits no thread: start its own.
                if writer is None or writer.pid != os.getpid():
                    writer = _Writer(self)
                    self._writer_instance = writer
        return writer

    def write(self, records: list[RequestRecord]) -> int:
        """Store ``records`` now, on this thread: what the writer thread runs.

        Returns how many were stored; a record too big even without its
        queries is left out (and logged). Raises ``StorageError`` when the
        cache fails, and skips the cache for ``retry_after`` seconds after.
        """
        if time.monotonic() < self._writes_paused_until:
            raise StorageError(
                f"cache {self.alias!r} failed less than {self.retry_after:g} s ago; "
                f"{len(records)} record(s) not stored"
            )
        items = []
        for record in records:
            try:
                items.append((record.id, _fitted_json(compact(record), self.max_record_bytes)))
            except StorageError:
                logger.warning("querylens could not store request %s", record.id, exc_info=True)
        if not items:
            return 0
        try:
            self._write_batch(items)
        except StorageError:
            self._writes_paused_until = time.monotonic() + self.retry_after
            raise
        except Exception as exc:
            self._writes_paused_until = time.monotonic() + self.retry_after
            raise StorageError(
                f"cache {self.alias!r} could not store {len(items)} record(s): {exc}"
            ) from exc
        return len(items)

    def _write_batch(self, items: list[tuple[str, str]]) -> None:
        """One increment claims a sequence number per record, one ``set_many`` writes them all."""
        cache = self._cache()
        last = _increment(cache, self._counter_key, len(items))
        values = {}
        for sequence, (request_id, text) in enumerate(items, start=last - len(items) + 1):
            # The record's JSON, made once, wrapped by hand.
            values[self._slot_key(sequence)] = f'{{"seq":{sequence},"v":2,"record":{text}}}'
            values[self._owner_key(sequence)] = f"{sequence} {request_id}"
        failed = cache.set_many(values, timeout=self.timeout)
        if failed:
            raise StorageError(f"the cache refused {', '.join(failed)}")

    def _report_drops(self, count: int) -> None:
        _increment(self._cache(), self._dropped_key, count)

    # -- reading ----------------------------------------------------------

    def _latest_sequence(self, cache: BaseCache) -> int:
        try:
            value = cache.get(self._counter_key)
        except Exception as exc:
            raise StorageError(f"cache {self.alias!r} is unavailable: {exc}") from exc
        if value is None:
            return 0
        if not isinstance(value, int) or isinstance(value, bool):
            raise StorageError(
                f"the counter {self._counter_key!r} holds {type(value).__name__}, not int"
            )
        return value

    def _read(self, function: Callable[[], Any]) -> Any:
        try:
            return _calls.call(function, self.read_timeout)
        except CacheTimeout as exc:
            raise StorageError(f"cache {self.alias!r} is unavailable: {exc}") from exc

    def recent(self, limit: int | None = None) -> list[RequestRecord]:
        return self.recent_and_skipped(limit)[0]

    def recent_and_skipped(self, limit: int | None = None) -> tuple[list[RequestRecord], int]:
        self.flush(self.flush_timeout)
        return self._read(lambda: self._recent(limit))  # type: ignore[no-any-return]

    def _recent(self, limit: int | None) -> tuple[list[RequestRecord], int]:
        cache = self._cache()
        latest = self._latest_sequence(cache)
        count = min(self.size, latest) if limit is None else min(limit, self.size, latest)
        sequences = [latest - offset for offset in range(max(count, 0))]
        values = self._get_many(cache, [self._slot_key(n) for n in sequences])
        records = []
        skipped = 0
        for sequence in sequences:
            try:
                record = _decode(values.get(self._slot_key(sequence)), sequence)
            except _Unreadable:
                skipped += 1
                continue
            # None: not written yet (a writer between incr and set), expired,
            # or overwritten by a newer lap.
            if record is not None:
                records.append(record)
        return records, skipped

    def _get_many(self, cache: BaseCache, keys: list[str]) -> dict[str, Any]:
        if not keys:
            return {}
        try:
            return cache.get_many(keys)
        except _unreachable() as exc:
            raise StorageError(f"cache {self.alias!r} is unavailable: {exc}") from exc
        except Exception:
            # One unreadable value (a pickle the backend cannot load) fails
            # the whole batch; fetch one by one to keep the readable ones.
            pass
        values = {}
        for key in keys:
            try:
                value = cache.get(key)
            except _unreachable() as exc:
                raise StorageError(f"cache {self.alias!r} is unavailable: {exc}") from exc
            except Exception:
                continue
            if value is not None:
                values[key] = value
        return values

    def get(self, request_id: str) -> RequestRecord | None:
        if not _REQUEST_ID.fullmatch(request_id):
            # Not an id we could have written, and not a safe cache key.
            return None
        self.flush(self.flush_timeout)
        return self._read(lambda: self._get(request_id))  # type: ignore[no-any-return]

    def _get(self, request_id: str) -> RequestRecord | None:
        cache = self._cache()
        owners = self._get_many(cache, [self._owner_key(slot) for slot in range(self.size)])
        sequences = [
            owner[0]
            for owner in map(_parse_owner, owners.values())
            if owner is not None and owner[1] == request_id
        ]
        if not sequences:
            return None
        # A record stored twice has two owners; the newest copy wins.
        sequence = max(sequences)
        values = self._get_many(cache, [self._slot_key(sequence)])
        try:
            record = _decode(values.get(self._slot_key(sequence)), sequence)
        except _Unreadable:
            return None
        return record if record is not None and record.id == request_id else None

    def clear(self) -> None:
        cache = self._cache()
        keys = [self._slot_key(slot) for slot in range(self.size)]
        keys += [self._owner_key(slot) for slot in range(self.size)]
        try:
            # The counter stays: sequence numbers never repeat, so a record a
            # writer stores just after the clear cannot pass for an old one.
            cache.delete_many(keys)
        except Exception as exc:
            raise StorageError(f"cache {self.alias!r} could not be cleared: {exc}") from exc


def _increment(cache: BaseCache, key: str, delta: int) -> int:
    """Add ``delta`` to the counter ``key`` (made at 0 if missing); its new value.

    On Django's Redis backend, one ``INCRBY``: the backend's own ``incr()``
    first asks whether the key exists, a round trip of its own on every
    batch. Elsewhere ``incr()``, and ``add()`` when the counter is missing
    (the first write ever, or evicted): of several first writers only one
    sets it, since ``add()`` is atomic.
    """
    if isinstance(cache, RedisCache):
        client = cache._cache.get_client(write=True)
        # The backend keeps integers as plain numbers, so get() and incr()
        # read what INCRBY made.
        return int(client.incrby(cache.make_and_validate_key(key), delta))
    try:
        return int(cache.incr(key, delta))
    except ValueError:
        cache.add(key, 0, timeout=None)
        return int(cache.incr(key, delta))


def _parse_owner(value: Any) -> tuple[int, str] | None:
    if not isinstance(value, str):
        return None
    sequence, _, request_id = value.partition(" ")
    if not sequence.isdigit() or not _REQUEST_ID.fullmatch(request_id):
        return None
    return int(sequence), request_id


class _Unreadable(Exception):
    """A slot holds something that is not a record this version can read."""


def _decode(value: Any, sequence: int) -> RequestRecord | None:
    """The record in a slot's value, or None when it is not sequence's record.

    Raises ``_Unreadable`` for garbage of any shape (not JSON, wrong keys,
    wrong types, another version's record): one bad slot must not hide the
    rest of the buffer, so callers skip it and count it.
    """
    if value is None:
        return None
    try:
        data = json.loads(value)
        if data["seq"] != sequence:
            return None
        if data.get("v") == 2:
            return expand(data["record"])
        # Written by querylens 0.x before the compact form: the plain record.
        return RequestRecord.from_dict(data["record"])
    except Exception as exc:
        raise _Unreadable from exc


def compact(record: RequestRecord) -> dict[str, Any]:
    """A record's dict for the wire: call sites and stacks written once, queries as rows.

    Every query of a loop has the same stack of call sites; written out per
    query they made nine tenths of a record's bytes. Here each distinct call
    site and stack is listed once and the queries point at them by number.
    ``expand()`` gives the record back, equal to the original.
    """
    sites: dict[CallSite, int] = {}
    stacks: dict[tuple[int, ...], int] = {}

    def site_number(site: CallSite | None) -> int | None:
        if site is None:
            return None
        number = sites.get(site)
        if number is None:
            number = sites[site] = len(sites)
        return number

    # The queries of a loop share one stack list (``analysis``): numbered
    # once by identity, the common case costs one dict lookup per query.
    by_list: dict[int, int] = {}
    rows = []
    for query in record.queries:
        stack_number = by_list.get(id(query.stack))
        if stack_number is None:
            stack = tuple(site_number(site) for site in query.stack)
            stack_number = stacks.get(stack)  # type: ignore[arg-type]
            if stack_number is None:
                stack_number = stacks[stack] = len(stacks)  # type: ignore[index]
            by_list[id(query.stack)] = stack_number
        rows.append(
            [
                query.index,
                query.alias,
                query.sql,
                query.params,
                query.duration_ms,
                query.fingerprint,
                site_number(query.callsite),
                stack_number,
                query.relation,
                query.start_ms,
                query.many,
                query.error,
            ]
        )
    data = record.to_dict_without_queries()
    data["queries"] = rows
    data["sites"] = [[site.file, site.line, site.function] for site in sites]
    data["stacks"] = [list(stack) for stack in stacks]
    return data


def expand(data: dict[str, Any]) -> RequestRecord:
    """The record ``compact()`` wrote."""
    sites = [
        CallSite(str(file), int(line), str(function)) for file, line, function in data["sites"]
    ]
    stacks = [[sites[number] for number in stack] for stack in data["stacks"]]
    record = RequestRecord.from_dict({**data, "queries": []})
    record.queries = [
        QueryRecord(
            index=int(index),
            alias=str(alias),
            sql=str(sql),
            params=params,
            duration_ms=float(duration_ms),
            fingerprint=str(fingerprint),
            callsite=sites[callsite] if callsite is not None else None,
            stack=list(stacks[stack]),
            relation=relation,
            start_ms=float(start_ms),
            many=bool(many),
            error=error,
        )
        for (
            index,
            alias,
            sql,
            params,
            duration_ms,
            fingerprint,
            callsite,
            stack,
            relation,
            start_ms,
            many,
            error,
        ) in data["queries"]
    ]
    return record


def _json(data: Any) -> str:
    # ensure_ascii (the default) makes characters and bytes the same count.
    return json.dumps(data, separators=_JSON_SEPARATORS)


def _size(data: Any) -> int:
    return len(_json(data))


def _fitted_json(data: dict[str, Any], max_bytes: int) -> str:
    """The JSON of ``data`` (a record's dict), trimmed to at most ``max_bytes``.

    Trailing queries go first, counted in ``truncated`` as if
    ``MAX_QUERIES_PER_REQUEST`` had stopped them; group SQL is shortened only
    when no query is left. Raises ``StorageError`` when even that is too big.
    """
    text = _json(data)
    if len(text) <= max_bytes:
        return text
    queries = data["queries"]
    # Measured once, not per attempt: the JSON of the record without queries
    # (with "truncated" at its largest), then what each kept query adds: its
    # JSON, a comma, and its index (and a comma) in each group naming it.
    groups = (*data["duplicates"], *data["n_plus_one"])
    mentions = Counter(i for group in groups for i in group.get("query_indexes", []))
    room = max_bytes - _size(_without_queries_after(data, 0))
    needed = accumulate(
        _size(query) + (1 if index else 0) + mentions[index] * (len(str(index)) + 1)
        for index, query in enumerate(queries)
    )
    keep = bisect_right(list(needed), room)
    trimmed = _without_queries_after(data, keep)
    # The estimate errs on the safe side by a few bytes ("truncated" at its
    # largest, a comma per group's first index): one more may still fit.
    while keep < len(queries):
        bigger = _without_queries_after(data, keep + 1)
        if _size(bigger) > max_bytes:
            break
        keep, trimmed = keep + 1, bigger
    if keep == 0 and _size(trimmed) > max_bytes:
        for group in (*trimmed["duplicates"], *trimmed["n_plus_one"]):
            for key in ("sql", "sample_sql"):
                if isinstance(group.get(key), str) and len(group[key]) > _GROUP_SQL_CHARS:
                    group[key] = group[key][:_GROUP_SQL_CHARS] + " ..."
    text = _json(trimmed)
    if len(text) > max_bytes:
        raise StorageError(
            f"request {data['id']} does not fit in {max_bytes} bytes "
            f"with {keep} of its {len(queries)} queries"
        )
    return text


def _without_queries_after(data: dict[str, Any], keep: int) -> dict[str, Any]:
    dropped = len(data["queries"]) - keep

    def kept_indexes(group: dict[str, Any]) -> dict[str, Any]:
        # A group still counts every query; it only points at stored ones.
        indexes = [i for i in group.get("query_indexes", []) if i < keep]
        return {**group, "query_indexes": indexes}

    return {
        **data,
        "queries": data["queries"][:keep],
        "duplicates": [kept_indexes(group) for group in data["duplicates"]],
        "n_plus_one": [kept_indexes(group) for group in data["n_plus_one"]],
        "truncated": data["truncated"] + dropped,
    }
