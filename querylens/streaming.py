"""Streaming responses: their body runs after the middleware has returned.

A ``StreamingHttpResponse`` (Django's CSV-streaming recipe, say) produces
its rows while the server sends them, often with a lazy relation per row.
Those queries belong to the request. The middleware wraps the response's
content: while the server pulls each chunk, the request's recorder is
active again; when the server closes the response (it always does, after
the last chunk or on a broken connection), the record is finished and
stored, once.

The headers left before the body ran, so they cannot hold the final
counts: a streaming response carries only ``X-QueryLens-Request``, the id
under which its record is stored.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from querylens import capture
from querylens.capture import Recorder

logger = logging.getLogger("querylens")


class _Finisher:
    """Calls ``finish`` once, however many times the response is closed."""

    def __init__(self, finish: Callable[[], object]) -> None:
        self._finish: Callable[[], object] | None = finish

    def close(self) -> None:
        finish, self._finish = self._finish, None
        if finish is not None:
            try:
                finish()
            except Exception:
                logger.exception("querylens failed while finishing a streaming response")


class RecordedStream(_Finisher):
    """The sync content of a streaming response, recorded chunk by chunk."""

    def __init__(
        self, content: Iterator[Any], recorder: Recorder, finish: Callable[[], object]
    ) -> None:
        super().__init__(finish)
        self._content = content
        self._recorder = recorder

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        token = capture.activate(self._recorder)
        try:
            return next(self._content)
        finally:
            capture.deactivate(token)


class AsyncRecordedStream(_Finisher):
    """The async content of a streaming response, recorded chunk by chunk."""

    def __init__(
        self, content: AsyncIterator[Any], recorder: Recorder, finish: Callable[[], object]
    ) -> None:
        super().__init__(finish)
        self._content = content
        self._recorder = recorder

    def __aiter__(self) -> AsyncIterator[Any]:
        return self

    async def __anext__(self) -> Any:
        token = capture.activate(self._recorder)
        try:
            return await self._content.__anext__()
        finally:
            capture.deactivate(token)


def record_stream(response: Any, recorder: Recorder, finish: Callable[[], object]) -> None:
    """Make ``response``'s content run under ``recorder``; ``finish`` when it is closed."""
    content = response.streaming_content
    if getattr(response, "is_async", False):
        # The view's own async iterator (Django keeps it before wrapping it):
        # an async generator's frames are reached from it, not from the task.
        recorder.streams.append(getattr(response, "_iterator", None))
        response.streaming_content = AsyncRecordedStream(content, recorder, finish)
    else:
        response.streaming_content = RecordedStream(iter(content), recorder, finish)
