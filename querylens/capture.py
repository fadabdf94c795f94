"""Capture: the per-request recorder and the database execute wrapper.

This is the hot path. Each query pays for two clock reads, one ContextVar
lookup and a walk up the frame stack in which every code object is classified
once and then looked up in a dict. Nothing here formats SQL, parses it,
fingerprints it or builds a traceback: that happens in ``analysis`` when the
request ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import sys
import sysconfig
import threading
from _thread import get_ident
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar, Token
from time import perf_counter
from types import CodeType, FrameType
from typing import Any

#: A stack entry as captured: ``(id(code), line)`` for Python code (the code
#: object is kept in ``code_objects``), ``(template_name, line)`` for a
#: template node. Plain ints and strings hash fast, so analysis can group by
#: whole stacks cheaply.
RawFrame = tuple["int | str", int]
#: One step of the path from a root queryset to a related object:
#: ``(attribute, kind)`` with kind ``single``, ``multi`` or ``generic``.
Segment = tuple[str, str]

logger = logging.getLogger("querylens")

#: Longest SQL text kept per query; longer statements keep their head and a
#: marker with the original length, so a huge statement repeated in a loop
#: cannot grow the process by its size each time.
MAX_SQL_CHARS = 64 * 1024
#: Longest string or bytes parameter kept per query, likewise.
MAX_PARAM_CHARS = 64 * 1024
_SIZED = (str, bytes, bytearray)

#: Places that already logged an internal error (each logs once per process).
_reported: set[str] = set()


def report_internal_error(where: str) -> None:
    """Log an error of querylens's own, once per ``where``; never raises.

    Called from ``except`` blocks around querylens's code on the user's path:
    the user's query and response go on unharmed, the log says what failed.
    """
    try:
        if where in _reported:
            return
        logger.warning(
            "querylens failed while %s; the request goes on unrecorded there "
            "(logged once per process)",
            where,
            exc_info=True,
        )
        # Only once it is logged: out of stack, the next failure tries again.
        _reported.add(where)
    except Exception:  # a broken logging handler must not reach the user either
        pass


def truncated_sql(sql: str) -> str:
    """``sql`` cut to ``MAX_SQL_CHARS``, with a marker saying how long it was."""
    return f"{sql[:MAX_SQL_CHARS]} /* querylens: truncated, {len(sql)} characters */"


def kept_params(params: Any, many: bool) -> Any:
    """What is recorded of ``params``: a copy the application cannot mutate later.

    Django passes tuples (immutable, kept as they are); raw cursors often
    pass a list or a dict. Long strings and bytes are cut to
    ``MAX_PARAM_CHARS``. ``executemany`` parameter lists may be one-shot
    iterators that the driver consumed: only lists and tuples are kept.
    """
    cls = params.__class__
    if many:
        return list(params) if cls is list or cls is tuple else None
    if cls is tuple or cls is list:
        for value in params:
            if value.__class__ in _SIZED and len(value) > MAX_PARAM_CHARS:
                return [_capped(v) for v in params]
        return params if cls is tuple else params.copy()
    if cls is dict:
        return {key: _capped(value) for key, value in params.items()}
    return params


def _capped(value: Any) -> Any:
    if value.__class__ in _SIZED and len(value) > MAX_PARAM_CHARS:
        if isinstance(value, str):
            return f"{value[:MAX_PARAM_CHARS]}… [querylens: truncated, {len(value)} characters]"
        return f"<{len(value)} bytes>"
    return value


class RawQuery:
    """A query as captured, before analysis."""

    __slots__ = (
        "alias",
        "batch",
        "declaration",
        "duration",
        "error",
        "instruction",
        "library_path",
        "many",
        "params",
        "path",
        "refinement",
        "relation",
        "root",
        "sql",
        "stack",
        "start",
        "weak_via",
    )

    def __init__(
        self,
        alias: str,
        sql: str,
        params: Any,
        many: bool,
        start: float,
        duration: float,
        error: str | None,
        stack: tuple[RawFrame, ...],
    ) -> None:
        self.alias = alias
        self.sql = sql
        self.params = params
        self.many = many
        self.start = start
        self.duration = duration
        self.error = error
        self.stack = stack
        #: ``app_label.Model.attribute`` of the lazy load that ran this query.
        self.relation: str | None = None
        #: Path from the root queryset to the relation, last segment included.
        self.path: tuple[Segment, ...] = ()
        #: When the path is a guess, the relation whose N+1 would confirm it.
        self.weak_via: str | None = None
        #: How the per-object queryset refined the relation (a filter, a
        #: slice): ``querylens.fixes.Refinement``, or None.
        self.refinement: Any = None
        #: Label of the model the relation path starts from (``shop.Book``).
        self.root: str | None = None
        #: For a query no user code ran (empty ``stack``): the library code
        #: path that ran it, so two library lines never look like one loop.
        self.library_path: tuple[RawFrame, ...] = ()
        #: Run by ``prefetch_related_objects``: a batch load, never an N+1.
        self.batch = False
        #: For a query no user code ran: the project's class and attribute
        #: whose evaluation ran it (a serializer and its field), or None.
        self.declaration: tuple[type, str] | None = None
        #: The instruction the innermost user frame was at (-1: unknown).
        self.instruction = -1


#: One copy of each distinct stack captured, shared by every recording.
_shared_stacks: dict[tuple[RawFrame, ...], tuple[RawFrame, ...]] = {}
#: Bound of ``_shared_stacks`` (a project has hundreds of distinct stacks,
#: loops over recursive code may make more); past it, it starts again.
MAX_SHARED_STACKS = 4096


class Recorder:
    """Collects the queries of one recording (``querylens.lifecycle``)."""

    def __init__(
        self,
        *,
        max_queries: int = 1000,
        stack_depth: int = 30,
    ) -> None:
        self.max_queries = max_queries
        self.stack_depth = stack_depth
        self.started = perf_counter()
        #: The stored queries, as captured: ``(alias, sql, params, many,
        #: start, duration, error, stack, instruction)``, and for a query no
        #: user frame ran, its ``library_path`` and ``declaration`` too.
        self.captured: list[tuple[Any, ...]] = []
        #: What lazy loads taught about stored queries, by index:
        #: ``(relation, path, weak_via, refinement, root)``.
        self.tags: dict[int, tuple[Any, ...]] = {}
        #: Indexes of the stored queries a prefetch ran (batch loads).
        self.batches: set[int] = set()
        #: Every query seen, stored or not.
        self.count = 0
        #: Seconds spent in the database, over every query seen.
        self.db_time = 0.0
        #: Set for async requests: the task whose coroutines await the ORM.
        self.task: asyncio.Task[Any] | None = None
        #: The middleware's own frame: the stack walk stops there, because
        #: what lies beyond (server, test client) is the same for every query
        #: of the request and never a call site.
        self.boundary: Any = None
        #: ``(frame, count, thread)`` while a relation descriptor loads an
        #: object: the next query, if it is the ``count``-th seen and runs in
        #: ``thread``, is the load's own, run by Django's code below
        #: ``frame``; its walk starts at ``frame``, not ten frames lower
        #: (``querylens.relations``).
        self.walk_from: tuple[FrameType, int, int] | None = None
        #: Outer parts of the stack already walked, by frame: see capture_stack.
        self.tails: dict[int, Tail] = {}
        #: One copy of each distinct relation path captured.
        self.paths: dict[tuple[Segment, ...], tuple[Segment, ...]] = {}
        #: One copy of each distinct tag (a loop's lazy loads are tagged alike).
        self.tag_copies: dict[tuple[Any, ...], tuple[Any, ...]] = {}
        #: Objects loaded lazily, by id: ``(obj, parent, attribute, kind)``.
        self.parents: dict[int, tuple[Any, Any, str, str]] = {}
        #: Recordings under way on this recorder, by ``id()`` of their scope
        #: (the request), so that entry points of one scope share one
        #: (``querylens.lifecycle``).
        self.scopes: dict[int, Any] = {}
        #: Async generators producing a streaming response's body
        #: (``querylens.streaming``): their frames are the call sites.
        self.streams: list[Any] = []
        self._lock = threading.Lock()

    def add(
        self,
        alias: str,
        sql: str,
        params: Any,
        many: bool,
        start: float,
        duration: float,
        error: str | None,
        frame: FrameType | None,
    ) -> None:
        row: tuple[Any, ...] | None = None
        # Read without the lock: racing threads may at worst store one query
        # fewer than the cap; the count below stays exact.
        if len(self.captured) < self.max_queries:
            stack, instruction = capture_stack(
                frame, self.stack_depth, self.task, self.boundary, self.tails, self.streams
            )
            # A loop's queries, and the same page requested again, have
            # equal stacks: one copy is kept for the process, which the
            # garbage collector stops tracking after its first passes; the
            # new copies are freed at once instead of piling up for it.
            known = _shared_stacks.get(stack)
            if known is None:
                if len(_shared_stacks) >= MAX_SHARED_STACKS:
                    _shared_stacks.clear()
                _shared_stacks[stack] = stack
            else:
                stack = known
            if len(sql) > MAX_SQL_CHARS:
                sql = truncated_sql(sql)
            if params is not None:
                params = kept_params(params, many)
            row = (
                alias,
                sql,
                params,
                many,
                start - self.started,
                duration,
                error,
                stack,
                instruction,
            )
            if not stack:
                # No user frame ran it: the library code path tells it apart.
                row += (library_path(frame, self.boundary), declaration(frame, self.boundary))
        with self._lock:
            self.count += 1
            self.db_time += duration
            if row is not None and len(self.captured) < self.max_queries:
                self.captured.append(row)

    @property
    def queries(self) -> list[RawQuery]:
        """The stored queries as ``RawQuery`` objects, with what was learnt about them.

        Built on each read. The analysis reads ``CapturedQueries`` instead,
        which builds an object only for the queries it looks at one by one.
        """
        captured = CapturedQueries(self)
        return [captured[index] for index in range(len(captured))]

    def part(self, stored: int, seen: int, db_time: float, *, cap: int) -> Recorder:
        """A recorder holding what this one captured since ``(stored, seen, db_time)``.

        At most ``cap`` queries: the nested recording's own
        ``MAX_QUERIES_PER_REQUEST``, which may be lower than this one's.
        """
        part = Recorder(max_queries=cap, stack_depth=self.stack_depth)
        end = stored + cap
        part.captured = self.captured[stored:end]
        part.tags = {i - stored: tag for i, tag in self.tags.items() if stored <= i < end}
        part.batches = {i - stored for i in self.batches if stored <= i < end}
        part.count = self.count - seen
        part.db_time = self.db_time - db_time
        return part

    def release(self, *, everything: bool = False) -> None:
        """Drop the references to frames (and, with ``everything``, to objects) kept for the walk.

        ``tails`` holds frames of the request's code, whose ``f_back`` chain
        leads to the middleware's frame, which holds the recording and so
        this recorder: a reference cycle that only the garbage collector
        could free, with every query, frame and model instance of the
        request inside. Released when the recording stops, everything goes
        when the last reference does, and the collector has no part in it.
        """
        self.tails.clear()
        self.walk_from = None
        if everything:
            self.paths.clear()
            self.tag_copies.clear()
            self.parents.clear()
            self.streams.clear()
            self.boundary = None
            self.task = None

    def mark(self) -> int:
        """Where the recorder stands now (queries seen), for ``tag_since``."""
        return self.count

    def _stored_at(self, mark: int) -> int:
        # Queries are stored until the cap, so the list's length at ``mark``
        # was the smaller of the two: no tuple per descriptor access.
        return min(mark, self.max_queries)

    def tag_batch_since(self, mark: int) -> None:
        """Mark the queries stored since ``mark`` as batch loads (a prefetch)."""
        self.batches.update(range(self._stored_at(mark), len(self.captured)))

    def tag_since(
        self,
        mark: int,
        relation: str,
        path: tuple[Segment, ...],
        weak_via: str | None,
        refinement: Any = None,
        root: str | None = None,
    ) -> bool:
        """Attribute the queries stored since ``mark`` to a relation.

        Only queries without a relation yet are tagged, so the innermost
        lazy load wins. Returns whether any query ran since ``mark``.
        """
        if self.count == mark:
            return False
        stored = self._stored_at(mark)
        # Every load of a loop names the same path: one copy is kept.
        path = self.paths.setdefault(path, path)
        tags = self.tags
        tag: tuple[Any, ...] = (relation, path, weak_via, refinement, root)
        try:  # noqa: SIM105 (suppress() is a context manager: slower, per lazy load)
            # The copy made here is freed at once: one tuple fewer per lazy
            # load for the garbage collector to count and visit.
            tag = self.tag_copies.setdefault(tag, tag)
        except TypeError:  # an unhashable refinement: keep this one
            pass
        for index in range(stored, len(self.captured)):
            if index not in tags:
                tags[index] = tag
        return True


class CapturedQueries:
    """A recorder's stored queries, column by column, for the analysis.

    During the request each query is a plain tuple, which the garbage
    collector stops tracking, not an object it must visit in every
    collection until the request ends. The passes over every query
    (fingerprints, duplicates, N+1 buckets) read columns; a ``RawQuery``
    is built only for a query read by index (``captured[i]``): the first
    of an N+1 group, say.
    """

    __slots__ = (
        "aliases",
        "batches",
        "durations",
        "errors",
        "instructions",
        "manys",
        "params",
        "rows",
        "sqls",
        "stacks",
        "starts",
        "tags",
    )

    def __init__(self, recorder: Recorder) -> None:
        self.rows = rows = recorder.captured
        self.tags = recorder.tags
        self.batches = recorder.batches
        # zip() stops at the shortest row: the nine columns every row has.
        columns: list[tuple[Any, ...]] = list(zip(*rows, strict=False))[:9] if rows else [()] * 9
        self.aliases: tuple[str, ...] = columns[0]
        self.sqls: tuple[str, ...] = columns[1]
        self.params: tuple[Any, ...] = columns[2]
        self.manys: tuple[bool, ...] = columns[3]
        self.starts: tuple[float, ...] = columns[4]
        self.durations: tuple[float, ...] = columns[5]
        self.errors: tuple[str | None, ...] = columns[6]
        self.stacks: tuple[tuple[RawFrame, ...], ...] = columns[7]
        self.instructions: tuple[int, ...] = columns[8]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> RawQuery:
        row = self.rows[index]
        query = RawQuery(*row[:8])
        query.instruction = row[8]
        if len(row) > 9:
            query.library_path, query.declaration = row[9], row[10]
        tag = self.tags.get(index)
        if tag is not None:
            query.relation, query.path, query.weak_via, query.refinement, query.root = tag
        query.batch = index in self.batches
        return query

    def library_path(self, index: int) -> tuple[RawFrame, ...]:
        """The library code path of a query no user frame ran (else ``()``)."""
        row = self.rows[index]
        return row[9] if len(row) > 9 else ()

    def relations(self) -> list[str | None]:
        """The relation of every query (None where no lazy load ran it)."""
        found: list[str | None] = [None] * len(self.rows)
        for index, tag in self.tags.items():
            if index < len(found):
                found[index] = tag[0]
        return found


_current: ContextVar[Recorder | None] = ContextVar("querylens_recorder", default=None)


def current_recorder() -> Recorder | None:
    """The recorder of the request being handled, if any."""
    return _current.get()


#: Recorders active now in this process (every thread and task), and what
#: turns the relation hooks on and off (``querylens.relations``). The hooks
#: go in when a recording starts and stay while recordings follow one
#: another (no cost per request for putting them in and out); the first
#: unrecorded work after the last recording (a request left out by
#: ``SAMPLE_RATE``) takes them out with ``settle()``, so it runs Django's
#: own descriptors. A process that never records never has them.
_active = 0
_hooks_in = False
_active_lock = threading.Lock()
_switches: list[Callable[[bool], None]] = []


def on_activity(switch: Callable[[bool], None]) -> None:
    """Call ``switch(True)`` when recording starts in this process, ``switch(False)`` on ``settle()``."""
    with _active_lock:
        _switches.append(switch)
        if _hooks_in:
            switch(True)


def _count_activity(change: int) -> None:
    global _active, _hooks_in
    with _active_lock:
        _active = max(0, _active + change)
        if _active and not _hooks_in:
            _hooks_in = True
            for switch in _switches:
                switch(True)


def settle() -> None:
    """Take the hooks out if no recording is active: this work is not recorded."""
    global _hooks_in
    if not _hooks_in or _active:
        return  # the common cases, without the lock
    with _active_lock:
        if _hooks_in and not _active:
            _hooks_in = False
            for switch in _switches:
                switch(False)


def recording_anywhere() -> bool:
    """Whether a recorder is active in any thread or task of this process."""
    return _active > 0


def activate(recorder: Recorder) -> Token[Recorder | None]:
    token = _current.set(recorder)
    _count_activity(+1)
    return token


def deactivate(token: Token[Recorder | None]) -> None:
    try:
        _current.reset(token)
    finally:
        _count_activity(-1)


@contextmanager
def paused() -> Iterator[None]:
    """Run the block unrecorded, e.g. a tool's own bookkeeping queries."""
    token = _current.set(None)
    try:
        yield
    finally:
        _current.reset(token)


# --- the execute wrapper -----------------------------------------------------


def execute_wrapper(
    execute: Callable[..., Any], sql: str, params: Any, many: bool, context: dict[str, Any]
) -> Any:
    """Installed on every connection; records when a recorder is active."""
    recorder = _current.get()
    if recorder is None:
        return execute(sql, params, many, context)
    error = None
    start = perf_counter()
    try:
        return execute(sql, params, many, context)
    except Exception as exc:
        error = _error_text(exc)
        raise
    finally:
        duration = perf_counter() - start
        try:
            if sql.__class__ is not str:
                sql = _sql_text(sql, context)
            connection = context["connection"]
            walk_from = recorder.walk_from
            if (
                walk_from is not None
                and walk_from[1] == recorder.count
                and walk_from[2] == get_ident()
            ):
                # A relation's load (see Recorder.walk_from): every frame
                # below is Django's, walking them would only find library code.
                frame: Any = walk_from[0]
            elif _WITH_WRAPPERS is not None and connection.execute_wrappers[0] is execute_wrapper:
                # First of the connection's wrappers: Django's
                # CursorWrapper._execute_with_wrappers() calls this, and
                # CursorWrapper.execute() calls that. The walk starts beyond
                # those two frames, which are never looked at (nor made into
                # frame objects for the garbage collector to count).
                frame = sys._getframe(3)
            else:
                frame = sys._getframe(1)
            recorder.add(
                connection.alias,
                sql,
                params,
                many,
                start,
                duration,
                error,
                frame,
            )
        except Exception:
            # The query ran (or raised its own error, which goes on up):
            # nothing of ours may change what the application sees.
            report_internal_error("recording a query")


def _with_wrappers() -> CodeType | None:
    """The code of Django's ``CursorWrapper._execute_with_wrappers`` (None if it moved)."""
    from django.db.backends.utils import CursorWrapper

    method = getattr(CursorWrapper, "_execute_with_wrappers", None)
    return getattr(method, "__code__", None)


_WITH_WRAPPERS = _with_wrappers()


def _error_text(exc: Exception) -> str:
    try:
        return f"{type(exc).__name__}: {exc}"[:500]
    except Exception:  # an exception whose str() fails
        return type(exc).__name__


def _sql_text(sql: Any, context: dict[str, Any]) -> str:
    """SQL given as an object (psycopg's ``sql.Composed``) as text."""
    as_string = getattr(sql, "as_string", None)
    if as_string is not None:
        try:
            return str(as_string(context["connection"].connection))
        except Exception:
            pass
    return str(sql)


def install(connection: Any, **kwargs: Any) -> None:
    """Add the execute wrapper to a connection once (``connection_created`` receiver)."""
    wrappers = connection.execute_wrappers
    if execute_wrapper not in wrappers:
        # First in the list: ``connection.execute_wrapper()`` pops the last
        # entry on exit, so appending here could remove someone else's.
        wrappers.insert(0, execute_wrapper)


def install_on_open_connections() -> None:
    """Install on this thread's connections that exist already."""
    from django.db import connections

    for connection in connections.all(initialized_only=True):
        install(connection)
    _swept.done = True


#: Whether this thread's open connections were given the wrapper.
_swept = threading.local()


def install_in_this_thread() -> None:
    """``install_on_open_connections()`` once per thread (each recording start).

    Connections opened later get the wrapper from ``connection_created``;
    the sweep covers those a thread opened before the app was ready. Once
    done, a recording start pays one attribute lookup instead of a walk
    over every database alias (5 us).
    """
    if not getattr(_swept, "done", False):
        install_on_open_connections()


# --- call sites ----------------------------------------------------------------

_LIBRARY = 0
_USER = 1
_TEMPLATE = 2
#: asgiref's ``SyncToAsync.thread_handler``: below it, a thread runs sync code
#: on behalf of a coroutine that awaits it.
_BRIDGE = 3
#: The project's code in a generator or coroutine: a call site like
#: ``_USER``, but its callers change from one resumption to the next.
_USER_RESUMABLE = 4
_RESUMABLE = inspect.CO_GENERATOR | inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR

#: Kind of each code object seen, by ``id()``. A code object's own hash is
#: computed from its bytecode and constants on every call, far too slow for
#: the per-query path; ``code_objects`` keeps them alive so ids stay unique.
_kinds: dict[int, int] = {}
#: The code objects behind the ids in ``_kinds`` and in captured stacks.
code_objects: dict[int, CodeType] = {}
#: At most this many code objects are remembered. A project's code is a
#: few tens of thousands; code made at run time (``exec``, templates compiled
#: to Python by some engines) could grow it for ever, so past the bound
#: everything is forgotten and learnt again.
MAX_CODE_OBJECTS = 100_000
#: Bumped when the code objects are forgotten: caches keyed by their ids
#: (``analysis``) must be dropped too, since an id may now name other code.
code_generation = 0


#: Files all of whose code is library code: the walk passes their frames
#: on one set lookup by file name, without the code object's id. The two
#: files holding a special code object (``_special``) are never in it.
_library_files: set[str] = set()
#: Bound of ``_library_files`` (an installed environment has a few thousand).
MAX_LIBRARY_FILES = 20_000


def _kind(code: CodeType) -> int:
    global code_generation
    if len(code_objects) >= MAX_CODE_OBJECTS:
        code_objects.clear()
        _kinds.clear()
        # Keyed by the same ids, which may now name other code.
        _unused_returns.clear()
        _used_code.clear()
        _transient_code.clear()
        code_generation += 1
    kind = _classify(code)
    code_objects[id(code)] = code
    _kinds[id(code)] = kind
    filename = code.co_filename
    if (
        kind == _LIBRARY
        and filename not in _special_files
        and len(_library_files) < MAX_LIBRARY_FILES
    ):
        _library_files.add(filename)
    return kind


def treat_as_library(code: CodeType) -> None:
    """Never take frames of ``code`` for a call site.

    For tools that wrap querylens's own functions from a project file (the
    benchmark's timers): their frames would otherwise be every query's call
    site.
    """
    code_objects[id(code)] = code
    _kinds[id(code)] = _LIBRARY


def _library_prefixes() -> tuple[str, ...]:
    import asgiref
    import django

    paths = sysconfig.get_paths()
    prefixes = {
        paths.get("stdlib"),
        paths.get("platstdlib"),
        paths.get("purelib"),
        paths.get("platlib"),
        os.path.dirname(os.__file__),
        os.path.dirname(django.__file__),
        os.path.dirname(asgiref.__file__),
        os.path.dirname(os.path.abspath(__file__)),
    }
    for entry in sys.path:
        if entry.rstrip(os.sep).endswith(("site-packages", "dist-packages")):
            prefixes.add(entry)
    return tuple(os.path.join(os.path.abspath(p), "") for p in prefixes if p)


_library = _library_prefixes()


def _special_codes() -> dict[CodeType, int]:
    from asgiref.sync import SyncToAsync
    from django.template.base import Node

    return {
        Node.render_annotated.__code__: _TEMPLATE,
        SyncToAsync.thread_handler.__code__: _BRIDGE,
    }


_special: dict[CodeType, int] = {}
_special_files: set[str] = set()


def _classify(code: CodeType) -> int:
    if not _special:
        _special.update(_special_codes())
        _special_files.update(special.co_filename for special in _special)
    special = _special.get(code)
    if special is not None:
        return special
    filename = code.co_filename
    if filename.startswith("<") or os.path.abspath(filename).startswith(_library):
        return _LIBRARY
    return _USER_RESUMABLE if code.co_flags & _RESUMABLE else _USER


def _plain(name: Any) -> str:
    """``name`` as a plain ``str``.

    Template names are often ``SafeString``: ``str()`` returns those as they
    are, and the garbage collector tracks them (they are instances of a
    class of Python's), so every stack, row and record holding one would
    stay tracked for as long as the buffer keeps it.
    """
    return str.__str__(name) if isinstance(name, str) else str(name)


#: Whether a template file belongs to the project, by its path.
_template_files: dict[str, bool] = {}


def _project_template(origin: Any) -> bool:
    """Whether a template is the project's own, not an installed package's.

    ``admin/change_list.html`` is Django's: a loop in it is the admin's, so
    its line is no call site (the query is then keyed by its library path).
    """
    name = str(origin.name)
    known = _template_files.get(name)
    if known is None:
        # Templates from strings have no file ("<unknown source>"): the project's.
        known = name.startswith("<") or not os.path.abspath(name).startswith(_library)
        if len(_template_files) < 10_000:
            _template_files[name] = known
    return known


#: What the walk needs of a template's origin, by ``id()``: ``(origin, name)``
#: with the plain name for a project template, None for a package's. The
#: origin is kept, so an equal id is the same origin.
_origins: dict[int, tuple[Any, str | None]] = {}


def _learn_origin(origin: Any) -> tuple[Any, str | None]:
    if len(_origins) >= 10_000:
        # Loaders that parse templates anew on each request (no cached
        # loader, in DEBUG) make new origins every time: start again.
        _origins.clear()
    name = _plain(origin.template_name or origin.name) if _project_template(origin) else None
    known = _origins[id(origin)] = (origin, name)
    return known


#: Frames whose walk outwards is remembered, per request.
_MAX_TAILS = 64
#: A remembered frame: ``(frame, tail, below, used)``, see ``capture_stack``
#: (``used`` is None for a template node's frame).
Tail = tuple[Any, tuple[RawFrame, ...], "int | None", "bool | None"]

#: Code whose frames were remembered and returned unused this many times,
#: and never used, is not remembered any more (``capture_stack``).
TRANSIENT_AFTER = 3
#: Per code object (by id, as ``_kinds``): remembered frames of it that
#: returned before any walk stopped at them.
_unused_returns: dict[int, int] = {}
#: Code objects a walk stopped at a frame of: never transient.
_used_code: set[int] = set()
#: Code objects found transient: a helper or a lambda called once per row,
#: whose frame returns before the next query.
_transient_code: set[int] = set()


def _returned_unused(code: CodeType) -> None:
    """A remembered frame of ``code`` returned and no walk ever stopped at it."""
    key = id(code)
    if key in _used_code:
        return
    count = _unused_returns.get(key, 0) + 1
    if count >= TRANSIENT_AFTER:
        _transient_code.add(key)
        _unused_returns.pop(key, None)
    elif len(_unused_returns) < MAX_CODE_OBJECTS:
        _unused_returns[key] = count


def capture_stack(
    frame: FrameType | None,
    depth: int,
    task: asyncio.Task[Any] | None = None,
    boundary: Any = None,
    tails: dict[int, Tail] | None = None,
    streams: Sequence[Any] = (),
) -> tuple[tuple[RawFrame, ...], int]:
    """User and template frames from ``frame`` outwards, innermost first.

    Also returns the instruction (``f_lasti``) the innermost user frame is
    at, or -1: a loop repeats one instruction, while ``node.parent.parent``
    runs two on one line, a chain and not a loop.

    When the walk reaches a thread that runs sync code for a coroutine (an
    ORM call from an async view), the awaiting coroutines' frames are
    spliced in: the view's ``await`` line is the call site, not the worker
    thread's frames.

    ``tails`` remembers, for user and template frames, what lies beyond them.
    While a function runs, its callers wait in their calls to it, at the
    same lines: the next query run from a frame already walked (a loop's
    frame, a view's frame at its next line) takes that frame's own line and
    stops there instead of climbing to the middleware again. Frames of
    generators and coroutines are not remembered: each resumption may come
    from another caller.

    Each remembered frame also names the frame remembered right below it
    (``(frame, tail, below, used)``). A walk that stops at a frame has not
    met the frames remembered below it by the previous walk: those calls
    have returned, and are forgotten, so the dead frames of a loop's
    iterations are not kept (and tracked by the garbage collector) until a
    clear. Code whose frames keep returning before any walk stopped at them
    (``used``), and never did, is a lambda or a helper called once per row:
    its frames are no longer remembered, which would only cost a frame
    object kept alive, handed its data and forgotten again per query. Not
    remembering a frame never changes a stack, only where a walk may stop.
    """
    stack: list[RawFrame] = []
    get_kind = _kinds.get
    library_files = _library_files
    # (frame, where its tail starts, used): the tail starts after its own
    # entry for a user frame, whose line changes, before it for a template
    # node, whose line does not.
    visited: list[tuple[Any, int, bool | None]] = []
    tail: tuple[RawFrame, ...] = ()
    hit: Tail | None = None
    instruction = -1
    while frame is not None and frame is not boundary:
        code = frame.f_code
        if code.co_filename in library_files:
            # Most frames of the walk (the ORM, Django): one lookup, no call.
            frame = frame.f_back
            continue
        kind = get_kind(id(code))
        if kind is None:
            kind = _kind(code)
        if kind:  # _LIBRARY is 0
            known = None
            if tails is not None and kind < 3:
                known = tails.get(id(frame))
                # Frames remembered are kept alive, so an equal id is the same frame.
                if known is not None and known[0] is not frame:
                    known = None
            if kind == 1 or kind == 4:  # _USER, _USER_RESUMABLE
                if instruction < 0 and not stack:
                    instruction = frame.f_lasti
                stack.append((id(code), frame.f_lineno))
                position = len(stack)
            elif kind == 2:  # _TEMPLATE
                if known is not None:
                    # A node's frame renders one node, at one line: its own
                    # entry is remembered with what lies beyond it.
                    hit = known
                    tail = known[1]
                    break
                position = len(stack)
                node = frame.f_locals.get("self")
                token = getattr(node, "token", None)
                origin = getattr(node, "origin", None)
                if token is not None and origin is not None:
                    learnt = _origins.get(id(origin))
                    if learnt is None or learnt[0] is not origin:
                        learnt = _learn_origin(origin)
                    if learnt[1] is not None:
                        stack.append((learnt[1], token.lineno))
            else:  # _BRIDGE
                local = frame.f_locals
                stack.extend(
                    _awaiting_frames(
                        local.get("loop"), local.get("task_context"), task, boundary, streams
                    )
                )
            if known is not None:  # a user frame remembered: its line is fresh
                hit = known
                tail = known[1]
                break
            if tails is not None and kind < 3 and id(code) not in _transient_code:
                # Whether a walk stopped at it yet: None for a template
                # node's frame, whose code serves every node (never learnt).
                visited.append((frame, position, None if kind == 2 else False))
        frame = frame.f_back
    if tail:
        stack.extend(tail)
    if tails is None:
        return tuple(stack[:depth]), instruction
    below: int | None
    if hit is not None:
        if hit[3] is False:
            _used_code.add(id(hit[0].f_code))
        below = hit[2]
        while below is not None:  # returned calls: forgotten
            gone = tails.pop(below, None)
            if gone is None:
                break
            if gone[3] is False:
                _returned_unused(gone[0].f_code)
            below = gone[2]
        if not visited and (hit[2] is not None or hit[3] is False):
            tails[id(hit[0])] = (hit[0], hit[1], None, hit[3] is not None or None)
    if visited:
        if len(tails) + len(visited) > _MAX_TAILS:
            # A safety net (recursion, threads sharing a recorder): the
            # frames still running are re-learnt by the next walk.
            tails.clear()
            hit = None
        below = None
        for seen_frame, position, used in visited:
            tails[id(seen_frame)] = (seen_frame, tuple(stack[position:]), below, used)
            below = id(seen_frame)
        if hit is not None:
            tails[id(hit[0])] = (hit[0], hit[1], below, hit[3] is not None or None)
    return tuple(stack[:depth]), instruction


#: How many frames of a library code path are kept (enough to get past the
#: ORM's own dozen frames into the code that ran the query).
LIBRARY_PATH_DEPTH = 40


def library_path(frame: FrameType | None, boundary: Any = None) -> tuple[RawFrame, ...]:
    """The code path, innermost first, of a query that no user frame ran.

    Only called when ``capture_stack`` found no user or template frame, so
    queries run by the project's own code pay nothing for it.
    """
    path: list[RawFrame] = []
    while frame is not None and frame is not boundary and len(path) < LIBRARY_PATH_DEPTH:
        code = frame.f_code
        if id(code) not in _kinds:
            _kind(code)  # keeps the code object alive, so its id stays unique
        path.append((id(code), frame.f_lineno))
        frame = frame.f_back
    return tuple(path)


def declaration(frame: FrameType | None, boundary: Any = None) -> tuple[type, str] | None:
    """The serializer class and field being rendered when a query ran, if any.

    Django REST framework's ``Serializer.to_representation`` evaluates each
    declared field in turn; a nested serializer or a dotted ``source`` loads
    a relation per object with no frame of the project's on the stack. The
    innermost such frame names what the project declared. Only called when
    no user frame ran the query, and only once DRF is imported.
    """
    code = _serializer_code()
    if code is None:
        return None
    depth = 0
    while frame is not None and frame is not boundary and depth < LIBRARY_PATH_DEPTH:
        if frame.f_code is code:
            local = frame.f_locals
            serializer, field = local.get("self"), local.get("field")
            name = getattr(field, "field_name", None)
            if serializer is not None and isinstance(name, str):
                return type(serializer), name
            return None
        frame = frame.f_back
        depth += 1
    return None


_SERIALIZER_CODE: list[CodeType | None] = []


def _serializer_code() -> CodeType | None:
    if _SERIALIZER_CODE:
        return _SERIALIZER_CODE[0]
    module = sys.modules.get("rest_framework.serializers")
    if module is None:
        return None  # not imported (yet): looked up again next time
    method = getattr(getattr(module, "Serializer", None), "to_representation", None)
    _SERIALIZER_CODE.append(getattr(method, "__code__", None))
    return _SERIALIZER_CODE[0]


_ORM = (os.path.join("django", "db", ""), os.path.join("querylens", ""))
_TEMPLATE_ENGINE = os.path.join("django", "template", "")


#: Code that runs queries on everybody's behalf: never "the package" behind one.
PLUMBING = frozenset(
    {"django", "querylens", "asgiref", "psycopg", "psycopg2", "MySQLdb", "pymysql", "sqlite3"}
)
_STDLIB = os.path.join(sysconfig.get_paths()["stdlib"], "")


def top_package(filename: str) -> str | None:
    """The top-level import name ``filename`` belongs to; None for the standard library."""
    absolute = os.path.abspath(filename)
    if absolute.startswith(_STDLIB) and "-packages" not in absolute:
        return None
    from querylens.analysis import relative_path

    top = relative_path(absolute).replace(os.sep, "/").split("/", 1)[0].removesuffix(".py")
    return top if top and not top.startswith("<") else None


def calling_package(frame: FrameType | None) -> str | None:
    """The installed package whose code made the ORM call running now, or None.

    Walks out of the ORM, querylens, asgiref's thread hand-over and the
    standard library; the first frame beyond tells who called. The
    project's code, or Django's template engine rendering a project
    template (the project controls both), gives None; so does a worker
    thread whose caller awaits it from elsewhere (``afirst()``).
    """
    while frame is not None:
        code = frame.f_code
        filename = code.co_filename
        if not any(part in filename for part in _ORM):
            kind = _kinds.get(id(code))
            if kind is None:
                kind = _kind(code)
            if kind != _LIBRARY or _TEMPLATE_ENGINE in filename:
                return None
            top = top_package(filename)
            # Django's own code beyond the ORM and the template engine (the
            # admin, say) is a package like any other here.
            if top is not None and (top == "django" or top not in PLUMBING):
                return top
        frame = frame.f_back
    return None


def _awaiting_frames(
    loop: Any,
    task_context: Any,
    hint: asyncio.Task[Any] | None,
    boundary: Any = None,
    streams: Sequence[Any] = (),
) -> list[RawFrame]:
    """User frames of the coroutine awaiting the sync call identified by ``task_context``.

    ``SyncToAsync.__call__`` passes the same ``task_context`` list to the
    thread it starts, so its frame tells which coroutine chain we serve.
    """
    candidates: list[Any] = [hint.get_coro()] if hint is not None else []
    if loop is not None:
        # RuntimeError: the loop's task set changed under us; the hint remains.
        with contextlib.suppress(RuntimeError):
            candidates.extend(
                task.get_coro() for task in asyncio.all_tasks(loop) if task is not hint
            )
    # An async generator streaming a response is awaited through objects
    # that do not expose it; querylens.streaming names it here.
    candidates.extend(streams)
    for start in candidates:
        frames = _coroutine_frames(start)
        for position, frame in enumerate(frames):
            if (
                frame.f_code is _SYNC_TO_ASYNC_CALL
                and frame.f_locals.get("task_context") is task_context
            ):
                inside = frames[:position]
                if boundary in inside:
                    inside = inside[inside.index(boundary) + 1 :]
                return _user_frames(reversed(inside))
    return []


def _coroutine_frames(awaitable: Any) -> list[FrameType]:
    """Frames of ``awaitable`` (a coroutine or async generator) and what it awaits, outermost first."""
    frames: list[FrameType] = []
    while awaitable is not None and len(frames) < 200:
        frame = (
            getattr(awaitable, "cr_frame", None)
            or getattr(awaitable, "gi_frame", None)
            or getattr(awaitable, "ag_frame", None)
        )
        if frame is None:
            break
        frames.append(frame)
        awaitable = (
            getattr(awaitable, "cr_await", None)
            or getattr(awaitable, "gi_yieldfrom", None)
            or getattr(awaitable, "ag_await", None)
        )
    return frames


def _user_frames(frames: Iterator[FrameType]) -> list[RawFrame]:
    result: list[RawFrame] = []
    for frame in frames:
        code = frame.f_code
        kind = _kinds.get(id(code))
        if kind is None:
            kind = _kind(code)
        if kind in (_USER, _USER_RESUMABLE):
            result.append((id(code), frame.f_lineno))
    return result


def _sync_to_async_call() -> CodeType:
    from asgiref.sync import SyncToAsync

    return SyncToAsync.__call__.__code__


_SYNC_TO_ASYNC_CALL = _sync_to_async_call()
