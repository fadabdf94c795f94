"""Helpers for a project's own tests: fail a test that hides an N+1."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

from querylens import lifecycle
from querylens.capture import Recorder
from querylens.records import NPlusOneGroup, RequestRecord


class Result:
    """What a ``recorded()`` block ran; ``record`` is set when the block ends."""

    record: RequestRecord

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder


@contextmanager
def recorded(*, threshold: int | None = None, name: str = "block") -> Iterator[Result]:
    """Record the block's queries; ``result.record`` holds the analysis after it.

    Inside a larger recording (a request, a recorded test), the queries still
    go to it, and ``result.record`` covers this block's queries only.
    """
    recording = lifecycle.start()
    result = Result(recording.recorder)
    try:
        yield result
    finally:
        lifecycle.stop(recording)
    result.record = lifecycle.finish(recording, path=name, threshold=threshold, reuse=False)


def n_plus_one_message(groups: list[NPlusOneGroup]) -> str:
    """The failure message naming each group: count, SQL, call site, relation, fix."""
    lines = [f"{len(groups)} N+1 group(s) found:"]
    for group in groups:
        where = group.callsite or "unknown call site"
        lines.append(
            f"- {group.count} x {group.sample_sql[:120]!r} at {where}"
            + (f" via {group.relation}" if group.relation else "")
            + (
                f"; fix: {group.suggestion}"
                if group.suggestion
                else f"; {group.note or 'no one-line fix known'}"
            )
        )
    return "\n".join(lines)


@contextmanager
def assert_no_n_plus_one(*, threshold: int | None = None) -> Iterator[Result]:
    """Fail with a readable message when the block runs an N+1.

    Groups accepted by ``QUERYLENS["ALLOW"]`` do not fail it. ::

        with assert_no_n_plus_one():
            client.get("/books/")
    """
    with recorded(threshold=threshold) as result:
        yield result
    groups = result.record.unexpected_n_plus_one
    if groups:
        raise AssertionError(n_plus_one_message(groups))


class QueryLensTestCaseMixin:
    """``assertNoNPlusOne()`` for ``unittest``/``manage.py test`` test cases.

    ::

        class BookTests(QueryLensTestCaseMixin, TestCase):
            def test_list(self):
                with self.assertNoNPlusOne():
                    self.client.get("/books/")
    """

    def assertNoNPlusOne(self, *, threshold: int | None = None) -> AbstractContextManager[Result]:
        return assert_no_n_plus_one(threshold=threshold)
