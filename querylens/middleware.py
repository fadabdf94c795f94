"""The middleware: measure each request, analyse it, store it, report it.

It is one entry point of ``querylens.lifecycle``, which holds the rules it
shares with the toolbar panel and the test helpers.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings
from django.http import HttpRequest, HttpResponseBase
from django.utils.functional import LazyObject, empty

from querylens import capture, lifecycle
from querylens.conf import conf
from querylens.records import RequestRecord
from querylens.storage import MemoryStorage, get_storage
from querylens.streaming import record_stream

logger = logging.getLogger("querylens")


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
        recording = self._start(request)
        if recording is None:
            return self.get_response(request)
        try:
            response = self.get_response(request)
        finally:
            lifecycle.stop(recording)
        user = loaded_user(request) if self._needs_user() else None
        if getattr(response, "streaming", False):
            return self._follow_stream(request, response, recording, user)  # type: ignore[arg-type]
        return self._finish(request, response, recording, user)  # type: ignore[arg-type]

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        recording = self._start(request)
        if recording is None:
            return await self.get_response(request)  # type: ignore[no-any-return,misc]
        try:
            response = await self.get_response(request)  # type: ignore[misc]
        finally:
            lifecycle.stop(recording)
        user = loaded_user(request) if self._needs_user() else None
        if getattr(response, "streaming", False):
            return self._follow_stream(request, response, recording, user)
        if _stores_in_memory():
            return self._finish(request, response, recording, user)
        # Writing to a shared storage is network I/O: keep it off the event loop.
        return await sync_to_async(self._finish, thread_sensitive=False)(
            request, response, recording, user
        )

    # -- shared helpers ---------------------------------------------------

    def _start(self, request: HttpRequest) -> lifecycle.Recording | None:
        try:
            if lifecycle.skip_reason(request.path) is not None or lifecycle.sampled_out():
                # Not recorded: Django's own descriptors, not our hooks, serve it.
                capture.settle()
                return None
            # Our own frame: the stack walk stops there, because what lies
            # beyond (server, test client) is the same for every query.
            return lifecycle.start(boundary=sys._getframe(1), scope=request)
        except Exception:
            logger.exception("querylens could not start measuring %s", request.path)
            return None

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
        recording: lifecycle.Recording,
        user: Any,
    ) -> HttpResponseBase:
        try:
            if lifecycle.excluded_namespace(request):
                return response
            record = _record_and_store(recording, request, response)
            if _headers_allowed(user):
                add_headers(response, record)
        except Exception:
            logger.exception("querylens failed while finishing %s", request.path)
        return response

    def _follow_stream(
        self,
        request: HttpRequest,
        response: HttpResponseBase,
        recording: lifecycle.Recording,
        user: Any,
    ) -> HttpResponseBase:
        """Record the body as the server pulls it; finish when it closes the response."""
        try:
            if lifecycle.excluded_namespace(request):
                return response

            record_stream(
                response,
                recording.recorder,
                lambda: _record_and_store(recording, request, response),
            )
            if _headers_allowed(user):
                # The counts are not known before the body has run.
                response["X-QueryLens-Request"] = recording.request_id
        except Exception:
            logger.exception("querylens failed while following the stream of %s", request.path)
        return response


def _record_and_store(
    recording: lifecycle.Recording, request: HttpRequest, response: HttpResponseBase
) -> RequestRecord:
    """Finish the request's record, keep it, log its N+1s."""
    # The toolbar panel may have built it already (one record, one id); it
    # stores it only when no middleware will.
    record = lifecycle.finish_request(recording, request, response)
    lifecycle.store(record)
    if record.n_plus_one:
        _log_n_plus_one(record)
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


def _stores_in_memory() -> bool:
    try:
        return isinstance(get_storage(), MemoryStorage)
    except Exception:
        return False  # _finish logs the storage problem


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
