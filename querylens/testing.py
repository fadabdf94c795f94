"""Helpers for a project's own tests: fail a test that hides an N+1."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from contextlib import contextmanager

from querylens.analysis import build_record
from querylens.capture import Recorder, recording
from querylens.conf import conf
from querylens.records import RequestRecord


class Result:
    """What a ``recorded()`` block ran; ``record`` is set when the block ends."""

    record: RequestRecord

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder


def analyse(
    recorder: Recorder, *, threshold: int | None = None, name: str = "block"
) -> RequestRecord:
    """Analyse what ``recorder`` has captured so far."""
    return build_record(
        recorder,
        request_id="test",
        method="",
        path=name,
        view=None,
        status=None,
        started_at=dt.datetime.now(dt.timezone.utc),
        duration_ms=(time.perf_counter() - recorder.started) * 1000,
        threshold=threshold if threshold is not None else conf.N_PLUS_ONE_THRESHOLD,
        record_params=True,
    )


@contextmanager
def recorded(*, threshold: int | None = None) -> Iterator[Result]:
    """Record the block's queries; ``result.record`` holds the analysis after it."""
    with recording() as recorder:
        result = Result(recorder)
        start = len(recorder.queries)
        yield result
    if start:
        # Nested in a larger recording: analyse only this block's queries.
        inner = Recorder(max_queries=recorder.max_queries)
        inner.queries = recorder.queries[start:]
        inner.count = len(inner.queries)
        inner.db_time = sum(q.duration for q in inner.queries)
        recorder = inner
    result.record = analyse(recorder, threshold=threshold)


@contextmanager
def assert_no_n_plus_one(*, threshold: int | None = None) -> Iterator[Result]:
    """Fail with a readable message when the block runs an N+1.

    ::

        with assert_no_n_plus_one():
            client.get("/books/")
    """
    with recorded(threshold=threshold) as result:
        yield result
    groups = result.record.n_plus_one
    if groups:
        lines = [f"{len(groups)} N+1 group(s) found:"]
        for group in groups:
            where = group.callsite or "unknown call site"
            lines.append(
                f"- {group.count} x {group.sample_sql[:120]!r} at {where}"
                + (f" via {group.relation}" if group.relation else "")
                + (f"; fix: {group.suggestion}" if group.suggestion else "")
            )
        raise AssertionError("\n".join(lines))
