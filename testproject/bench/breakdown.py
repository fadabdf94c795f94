"""Where querylens's time goes, in microseconds per query (a diagnostic).

Runs one benchmark page many times in a querylens worker with a timer around
each part of querylens's per-query and per-request work, and prints the
median time of one call of each part, and what that makes per request and per
query. Nested parts include their children. The timers cost a little
themselves (two clock reads per call), so this explains the benchmark's
ratio; it does not replace it.

    python testproject/bench/breakdown.py --page nplusone --requests 300

It wraps querylens internals by name (``capture.capture_stack``,
``relations.origin``, ...). When those move, the missing ones are reported
and skipped, never guessed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from time import perf_counter_ns
from typing import Any

if __package__ in (None, ""):
    _HERE = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
    sys.path[:0] = [str(_HERE.parent), str(_HERE.parent.parent)]


class Timers:
    """Per-call durations of wrapped functions.

    Wall-clock (``perf_counter_ns``, a cheap vDSO call) per call, summarised
    by the median: on a busy machine a call now and then waits milliseconds
    for a CPU, which would swamp a mean of microsecond-long calls.
    """

    def __init__(self) -> None:
        self.samples: dict[str, list[int]] = {}
        self.missing: list[str] = []

    def wrap(self, owner: Any, name: str, label: str) -> None:
        """Replace ``owner.name`` with a timed version of itself."""
        original = getattr(owner, name, None)
        if original is None:
            self.missing.append(label)
            return
        setattr(owner, name, self.timed(original, label))

    def timed(self, function: Callable[..., Any], label: str) -> Callable[..., Any]:
        samples = self.samples.setdefault(label, [])
        append = samples.append

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = perf_counter_ns()
            try:
                return function(*args, **kwargs)
            finally:
                append(perf_counter_ns() - started)

        return timed

    def reset(self) -> None:
        for samples in self.samples.values():
            samples.clear()


def instrument(timers: Timers) -> None:
    """Time querylens's parts; the wrapped database call is timed apart."""
    from django.db import connections

    from querylens import analysis, capture, lifecycle, middleware, relations

    # The execute wrapper sits in each connection's list; its own cost is its
    # total minus the database call it wraps.
    connection = connections["default"]
    connection.ensure_connection()
    wrapper = capture.execute_wrapper
    total = timers.timed(wrapper, "execute_wrapper (total, incl. the query)")
    inner = timers.timed

    def execute_wrapper(execute: Any, sql: Any, params: Any, many: Any, context: Any) -> Any:
        return total(
            inner(execute, "  the query itself (Django cursor + SQLite)"),
            sql,
            params,
            many,
            context,
        )

    # The timers' frames now sit between Django and querylens's code; they
    # live in this (user) file, so tell the call-site walk they are library
    # frames, or they would become every query's call site.
    probe = timers.timed(lambda: None, "_probe")
    for code in (execute_wrapper.__code__, probe.__code__):
        capture.treat_as_library(code)
    del timers.samples["_probe"]
    # The middleware re-installs ``capture.execute_wrapper`` on every request
    # when it is missing from the list: point that name at the timed one.
    capture.execute_wrapper = execute_wrapper
    connection.execute_wrappers[:] = [
        execute_wrapper if entry is wrapper else entry for entry in connection.execute_wrappers
    ]
    timers.wrap(capture.Recorder, "add", "  Recorder.add (incl. capture_stack)")
    timers.wrap(capture, "capture_stack", "    capture_stack")
    timers.wrap(relations, "origin", "relations.origin (lazy-load path)")
    timers.wrap(capture.Recorder, "tag_since", "Recorder.tag_since")
    timers.wrap(
        middleware.QueryLensMiddleware,
        "_finish",
        "middleware._finish (analysis+store+headers)",
    )
    timers.wrap(lifecycle, "finish_request", "  finish_request (analysis)")
    timers.wrap(analysis, "_query_record", "    _query_record (x queries)")
    timers.wrap(analysis, "duplicate_sets", "    duplicate_sets")
    timers.wrap(analysis, "n_plus_one_groups", "    n_plus_one_groups")
    timers.wrap(lifecycle, "store", "  store (ring buffer)")
    timers.wrap(middleware, "add_headers", "  add_headers")
    timers.wrap(lifecycle, "get_storage", "  get_storage")


def main(argv: list[str] | None = None) -> None:
    from bench.pages import PAGES
    from bench.worker import DEFAULT_DB, Worker, setup_django

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--page", choices=list(PAGES), default="nplusone")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--db", default=str(DEFAULT_DB))
    args = parser.parse_args(argv)
    if not Path(args.db).exists():
        import subprocess

        worker_py = Path(__file__).with_name("worker.py")
        subprocess.run(
            [sys.executable, worker_py, "--variant", "none", "--setup", "--db", args.db],
            check=True,
        )

    setup_django("querylens", args.db)
    worker = Worker("querylens")
    worker.check()
    timers = Timers()
    instrument(timers)
    worker.warm_up(args.warmup)
    timers.reset()
    _, cpu, gc_ns = worker.batch(args.page, args.requests)
    figures = {label: list(samples) for label, samples in timers.samples.items()}
    # The timers must not change what querylens does: same queries, once each.
    _, _, response, _ = worker.request(args.page)
    recorded = response.get("X-QueryLens-Queries")
    if recorded != str(PAGES[args.page][1]):
        raise SystemExit(f"querylens recorded {recorded} queries with the timers on")
    queries = PAGES[args.page][1]
    print(
        f"{args.page}: {args.requests} requests, {queries} queries each; median CPU "
        f"{statistics.median(cpu) / 1e6:.2f} ms per request with these timers on"
    )
    print(
        f"{'part (median per call x calls)':<48} {'us/call':>8} {'calls/req':>9} "
        f"{'us/req':>8} {'us/query':>8}"
    )
    for label, samples in figures.items():
        if not samples:
            print(f"{label:<48} {'-':>8} {0:>9}")
            continue
        per_call = statistics.median(samples) / 1000
        calls = len(samples) / args.requests
        print(
            f"{label:<48} {per_call:>8.2f} {calls:>9.1f} {per_call * calls:>8.0f} "
            f"{per_call * calls / queries:>8.2f}"
        )
    print(
        f"{'garbage collector (CPU, all of the process)':<48} {'':>8} {'':>9} "
        f"{gc_ns / args.requests / 1000:>8.0f} {gc_ns / args.requests / 1000 / queries:>8.2f}"
    )
    if timers.missing:
        print("not found (renamed?): " + ", ".join(timers.missing))


if __name__ == "__main__":
    main()
