"""The middleware: measure each request, analyse it, store it, report it."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
import re
import secrets
import sys
import time
from collections.abc import Awaitable, Callable
from contextvars import Token
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings
from django.http import HttpRequest, HttpResponseBase
from django.utils.functional import LazyObject, empty

from querylens import capture
from querylens.analysis import record_request
from querylens.capture import Recorder
from querylens.conf import conf
from querylens.records import RequestRecord
from querylens.storage import MemoryStorage, get_storage

logger = logging.getLogger("querylens")

#: URL namespaces whose pages are never recorded: our own and the toolbar's.
EXCLUDED_NAMESPACES = frozenset({"querylens", "djdt"})

#: When the last storage warning was logged (time.monotonic()); none yet.
_last_storage_warning = float("-inf")


class _Measurement:
    """What the middleware keeps between the start and the end of a request."""

    __slots__ = ("recorder", "request_id", "started", "started_at", "token")

    def __init__(self, recorder: Recorder, token: Token[Recorder | None] | None) -> None:
        self.recorder = recorder
        self.token = token
        self.request_id = secrets.token_urlsafe(12)
        self.started_at = dt.datetime.now(dt.timezone.utc)
        self.started = time.perf_counter()


class QueryLensMiddleware:
    """Record every query of a request; report counts, duplicates and N+1s."""

    sync_capable = True
    async_capable = True

    def __init__(
        self,
        get_response: Callable[[HttpRequest], HttpResponseBase]
        | Callable[[HttpRequest], Awaitable[HttpResponseBase]],
    ) -> None:
        self.get_response = get_response
        self.async_mode = iscoroutinefunction(self.get_response)
        if self.async_mode:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.async_mode:
            return self.__acall__(request)
        measurement = self._start(request)
        if measurement is None:
            return self.get_response(request)
        try:
            measurement.recorder.boundary = sys._getframe()
            response = self.get_response(request)
        finally:
            self._stop(measurement)
        user = loaded_user(request) if self._needs_user() else None
        return self._finish(request, response, measurement, user)  # type: ignore[arg-type]

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        measurement = self._start(request)
        if measurement is None:
            return await self.get_response(request)  # type: ignore[no-any-return,misc]
        try:
            measurement.recorder.task = asyncio.current_task()
            measurement.recorder.boundary = sys._getframe()
            response = await self.get_response(request)  # type: ignore[misc]
        finally:
            self._stop(measurement)
        user = loaded_user(request) if self._needs_user() else None
        if _stores_in_memory():
            return self._finish(request, response, measurement, user)
        # Writing to a shared storage is network I/O: keep it off the event loop.
        return await sync_to_async(self._finish, thread_sensitive=False)(
            request, response, measurement, user
        )

    # -- shared helpers ---------------------------------------------------

    def _start(self, request: HttpRequest) -> _Measurement | None:
        try:
            if not conf.ENABLED or _excluded_path(request.path):
                return None
            rate = conf.SAMPLE_RATE
            if rate < 1.0 and random.random() >= rate:
                return None
            active = capture.current_recorder()
            if active is not None:
                # Someone outside us (the toolbar panel) records already.
                return _Measurement(active, None)
            capture.install_on_open_connections()
            recorder = Recorder(
                max_queries=conf.MAX_QUERIES_PER_REQUEST, stack_depth=conf.STACK_DEPTH
            )
            return _Measurement(recorder, capture.activate(recorder))
        except Exception:
            logger.exception("querylens could not start measuring %s", request.path)
            return None

    def _stop(self, measurement: _Measurement) -> None:
        if measurement.token is not None:
            measurement.recorder.boundary = None
            capture.deactivate(measurement.token)

    def _needs_user(self) -> bool:
        try:
            policy = conf.HEADERS
            return policy == "staff" or (policy == "auto" and not settings.DEBUG)
        except Exception:
            return False

    def _finish(
        self,
        request: HttpRequest,
        response: HttpResponseBase,
        measurement: _Measurement,
        user: Any,
    ) -> HttpResponseBase:
        try:
            match = getattr(request, "resolver_match", None)
            if match is not None and EXCLUDED_NAMESPACES.intersection(match.namespaces):
                return response
            record = self._record(request, response, measurement)
            _store(record)
            if record.n_plus_one:
                _log_n_plus_one(record)
            if _headers_allowed(user):
                add_headers(response, record)
        except Exception:
            logger.exception("querylens failed while finishing %s", request.path)
        return response

    def _record(
        self, request: HttpRequest, response: HttpResponseBase, measurement: _Measurement
    ) -> RequestRecord:
        recorder = measurement.recorder
        if recorder.record is not None:
            # The toolbar panel, inside us, analysed the request already: one
            # record, one id, whoever finishes first.
            return recorder.record  # type: ignore[no-any-return]
        record = record_request(
            recorder,
            request,
            response,
            request_id=measurement.request_id,
            started_at=measurement.started_at,
            started=measurement.started,
        )
        recorder.record = record
        return record


def add_headers(response: HttpResponseBase, record: RequestRecord) -> None:
    """Set the ``X-QueryLens-*`` headers and append to ``Server-Timing``."""
    db_ms = f"{record.db_time_ms:.2f}"
    response["X-QueryLens-Request"] = record.id
    response["X-QueryLens-Queries"] = str(record.query_count)
    response["X-QueryLens-Time"] = db_ms
    response["X-QueryLens-Duplicates"] = str(record.duplicate_count)
    response["X-QueryLens-NPlusOne"] = str(record.n_plus_one_count)
    noun = "query" if record.query_count == 1 else "queries"
    timing = f'db;dur={db_ms};desc="{record.query_count} {noun}"'
    existing = response.get("Server-Timing")
    response["Server-Timing"] = f"{existing}, {timing}" if existing else timing


def _headers_allowed(user: Any) -> bool:
    policy = conf.HEADERS
    if policy == "always":
        return True
    if policy == "auto" and settings.DEBUG:
        return True
    if policy in ("auto", "staff"):
        return bool(
            user is not None
            and getattr(user, "is_active", False)
            and getattr(user, "is_staff", False)
        )
    return False


def loaded_user(request: HttpRequest) -> Any:
    """The request's user if the application loaded it already, else None.

    Loading it here would read the session and the user table after the
    view: queries the application does not run, which break its
    ``assertNumQueries`` tests. So only a user already in hand counts:
    ``AuthenticationMiddleware``'s lazy ``request.user`` once evaluated (or
    ``await request.auser()`` once awaited), or a user object an
    authentication layer (Django REST framework, say) assigned directly.
    """
    state = request.__dict__
    for cached in ("_cached_user", "_acached_user"):
        if cached in state:
            return state[cached]
    user = state.get("user")
    if user is None:
        return None
    if isinstance(user, LazyObject):
        wrapped = user._wrapped
        return None if wrapped is empty else wrapped
    return user


def _excluded_path(path: str) -> bool:
    return any(re.match(pattern, path) for pattern in conf.EXCLUDE_PATHS)


def _stores_in_memory() -> bool:
    try:
        return isinstance(get_storage(), MemoryStorage)
    except Exception:
        return False  # _finish logs the storage problem


def _store(record: RequestRecord) -> None:
    global _last_storage_warning
    try:
        get_storage().add(record)
    except Exception:
        # A storage outage must not flood the logs: one warning a minute.
        now = time.monotonic()
        if now - _last_storage_warning >= 60:
            _last_storage_warning = now
            logger.warning("querylens could not store request %s", record.id, exc_info=True)


def _log_n_plus_one(record: RequestRecord) -> None:
    if not logger.isEnabledFor(logging.DEBUG):
        return
    for group in record.n_plus_one:
        logger.debug(
            "N+1 in %s %s: %d queries (%.2f ms) at %s%s%s",
            record.method,
            record.path,
            group.count,
            group.total_ms,
            group.callsite or "unknown call site",
            f" via {group.relation}" if group.relation else "",
            f"; fix: {group.suggestion}" if group.suggestion else "",
        )
