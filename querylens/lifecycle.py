"""One recording lifecycle for every entry point: start, finish, store.

The middleware, the django-debug-toolbar panel, the test helpers, the pytest
plugin and the recording of management commands and tasks all start a
recording with ``start()``, stop it with ``stop()``, analyse it into a record
with ``finish()`` and keep it with ``store()``. The rules they share live
here too: which requests are not recorded, how a request id looks, how often
a storage failure is logged.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import random
import re
import secrets
import time
from collections.abc import Sequence
from contextvars import Token
from dataclasses import dataclass, field
from typing import Any

from querylens import allow as allow_rules
from querylens import capture
from querylens.allow import AllowRule
from querylens.analysis import build_record
from querylens.capture import Recorder
from querylens.conf import conf
from querylens.frameworks import AdminPage, admin_page
from querylens.records import RequestRecord
from querylens.storage import get_storage

logger = logging.getLogger("querylens")

#: URL namespaces whose pages are never recorded: our own and the toolbar's.
EXCLUDED_NAMESPACES = frozenset({"querylens", "djdt"})
#: Seconds between two warnings about the same storage failing.
STORAGE_WARNING_EVERY = 60.0

_last_storage_warning = float("-inf")


def new_request_id() -> str:
    """A URL-safe id, 16 characters of ``[A-Za-z0-9_-]``."""
    return secrets.token_urlsafe(12)


@functools.lru_cache(maxsize=16)
def _patterns(sources: tuple[str, ...]) -> tuple[re.Pattern[str], ...]:
    return tuple(re.compile(source) for source in sources)


def skip_reason(path: str) -> str | None:
    """Why a request to ``path`` is not recorded at all, or None.

    ``SAMPLE_RATE`` is not a reason here: it is drawn once per request by
    ``sampled_out()``.
    """
    if not conf.ENABLED:
        return 'querylens is disabled (QUERYLENS["ENABLED"] is False).'
    if any(pattern.match(path) for pattern in _patterns(tuple(conf.EXCLUDE_PATHS))):
        return 'This path matches QUERYLENS["EXCLUDE_PATHS"].'
    return None


def sampled_out() -> bool:
    rate = conf.SAMPLE_RATE
    return rate < 1.0 and random.random() >= rate


def excluded_namespace(request: Any) -> bool:
    """Whether ``request`` resolved to querylens's or the toolbar's own pages."""
    match = getattr(request, "resolver_match", None)
    return match is not None and bool(EXCLUDED_NAMESPACES.intersection(match.namespaces))


@dataclass(eq=False)
class Recording:
    """A recording under way: its recorder and what is needed to finish it.

    Entry points of one scope (the middleware and the toolbar panel, both
    given the request) hold the same ``Recording``: one record, one id.
    """

    recorder: Recorder
    #: Whether ``start()`` activated the recorder (and ``stop()`` must end it).
    owner: bool
    #: What the recording is for (the request), or None.
    scope: object = None
    token: Token[Recorder | None] | None = None
    request_id: str = field(default_factory=new_request_id)
    started_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc))
    started: float = field(default_factory=time.perf_counter)
    #: Where the recorder stood at the start: ``(stored queries, queries, db time)``.
    mark: tuple[int, int, float] = (0, 0, 0.0)
    #: Entry points that joined it after the one that started it.
    joined: int = 0
    #: The analysis, once an entry point of the scope finished it.
    record: RequestRecord | None = None
    #: The recorder's boundary before this nested recording set its own.
    outer_boundary: Any = None

    @property
    def nested(self) -> bool:
        """Inside a larger recording (a test, a command): only its own slice counts."""
        return not self.owner


def start(*, boundary: Any = None, scope: object = None) -> Recording:
    """Start recording the queries of this context, or join the active recording.

    A query is never counted twice: inside an active recording it goes to
    the active recorder. An entry point given the ``scope`` of a recording
    already under way (the toolbar panel and the middleware, both given the
    request) joins it and reports the same record. Inside a recording of
    another scope (a request made by a test client in a recorded test), the
    new recording reports only the queries it saw. ``boundary`` is the frame
    where call-site walks stop.
    """
    active = capture.current_recorder()
    if active is not None:
        if scope is not None:
            existing = active.scopes.get(id(scope))
            # The recording keeps its scope alive, so the id cannot be reused.
            if existing is not None and existing.scope is scope:
                existing.joined += 1
                return existing  # type: ignore[no-any-return]
        recording = Recording(
            active,
            owner=False,
            scope=scope,
            mark=(len(active.captured), active.count, active.db_time),
            outer_boundary=active.boundary,
        )
        if boundary is not None:
            # While this request runs, what lies beyond its middleware (the
            # test calling the client, say) is never its call site.
            active.boundary = boundary
    else:
        capture.install_in_this_thread()
        recorder = Recorder(max_queries=conf.MAX_QUERIES_PER_REQUEST, stack_depth=conf.STACK_DEPTH)
        # current_task() raises without a running loop (sync code, the
        # common case): an exception per request costs more than asking.
        loop = asyncio._get_running_loop()
        recorder.task = asyncio.current_task(loop) if loop is not None else None
        recorder.boundary = boundary
        recording = Recording(recorder, owner=True, scope=scope, token=capture.activate(recorder))
    if scope is not None:
        recording.recorder.scopes[id(scope)] = recording
    return recording


def _own_part(recording: Recording) -> Recorder:
    """The recorder, or for a nested recording a copy holding only its queries."""
    recorder = recording.recorder
    if not recording.nested:
        return recorder
    return recorder.part(*recording.mark, cap=conf.MAX_QUERIES_PER_REQUEST)


def stop(recording: Recording) -> None:
    """Stop recording: the entry point that started it ends it, joiners only leave."""
    if recording.joined:
        recording.joined -= 1
        return
    if recording.scope is not None:
        recording.recorder.scopes.pop(id(recording.scope), None)
    recording.recorder.release()
    if recording.owner and recording.token is not None:
        recording.recorder.boundary = None
        token, recording.token = recording.token, None
        capture.deactivate(token)
    elif not recording.owner:
        recording.recorder.boundary = recording.outer_boundary


def finish(
    recording: Recording,
    *,
    method: str = "",
    path: str = "",
    view: str | None = None,
    status: int | None = None,
    threshold: int | None = None,
    reuse: bool = True,
    allow: Sequence[AllowRule] | None = None,
    admin: AdminPage | None = None,
) -> RequestRecord:
    """Analyse what the recording captured into its record.

    The first entry point of a scope to finish builds the record and the
    others get the same one (``reuse``), so the middleware and the toolbar
    panel report one request with one id.
    """
    if reuse and recording.record is not None:
        record = recording.record
    else:
        record = _build(recording, method, path, view, status, threshold, allow, admin)
        if reuse:
            recording.record = record
    if recording.owner and recording.token is None:
        # Stopped and analysed: nothing more will be attributed.
        recording.recorder.release(everything=True)
    return record


def _build(
    recording: Recording,
    method: str,
    path: str,
    view: str | None,
    status: int | None,
    threshold: int | None,
    allow: Sequence[AllowRule] | None,
    admin: AdminPage | None,
) -> RequestRecord:
    return build_record(
        _own_part(recording),
        request_id=recording.request_id,
        method=method,
        path=path,
        view=view,
        status=status,
        started_at=recording.started_at,
        duration_ms=(time.perf_counter() - recording.started) * 1000,
        threshold=threshold if threshold is not None else conf.N_PLUS_ONE_THRESHOLD,
        record_params=conf.RECORD_PARAMS,
        allow=allow_rules.configured() if allow is None else allow,
        admin=admin,
    )


def finish_request(recording: Recording, request: Any, response: Any) -> RequestRecord:
    """``finish()`` for one Django request and its response."""
    match = getattr(request, "resolver_match", None)
    return finish(
        recording,
        method=request.method or "",
        path=request.path,
        view=getattr(match, "_func_path", None),
        status=getattr(response, "status_code", None),
        admin=admin_page(request),
    )


def store(record: RequestRecord) -> bool:
    """Keep ``record`` in the configured storage; never raises.

    A storage outage must not flood the logs: one warning a minute per
    process, whichever entry point meets it.
    """
    global _last_storage_warning
    try:
        get_storage().add(record)
        return True
    except Exception:
        now = time.monotonic()
        if now - _last_storage_warning >= STORAGE_WARNING_EVERY:
            _last_storage_warning = now
            logger.warning("querylens could not store request %s", record.id, exc_info=True)
        return False
