"""One benchmark variant in its own process, timing requests in-process.

The parent (``manage.py querylens_benchmark``) starts one worker per variant
and talks to it in JSON lines: the worker answers ``{"page": ..., "n": ...}``
with the wall-clock and CPU time of each of ``n`` requests, in nanoseconds. Requests go
straight to Django's WSGI handler, as a WSGI server would call it, minus the
socket: the less the harness costs, the less it dilutes the difference between
the variants.

Run on its own, a worker is the thing to profile (nothing else in the process)::

    python testproject/bench/worker.py --variant querylens --standalone 2000
    python testproject/bench/worker.py --variant querylens --standalone 2000 \\
        --page nplusone --cprofile /tmp/querylens.pstats
    py-spy record -o /tmp/ql.svg -- \\
        python testproject/bench/worker.py --variant querylens --standalone 5000
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import os
import re
import statistics
import sys
from pathlib import Path
from time import perf_counter_ns, thread_time_ns
from typing import Any, TextIO

if __package__ in (None, ""):
    # Run as a script: import the demo project's packages as manage.py does,
    # and not this folder's modules as top-level ones.
    _HERE = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
    sys.path[:0] = [str(_HERE.parent), str(_HERE.parent.parent)]

VARIANTS = ("none", "querylens", "querylens-off", "toolbar", "zeal", "nplusone", "silk")
#: The other tools, by the module each needs: measured when installed.
PEERS = {"toolbar": "debug_toolbar", "zeal": "zeal", "nplusone": "nplusone", "silk": "silk"}
#: What each variant is, for the report.
DESCRIPTIONS = {
    "none": "querylens and the other tools not installed",
    "querylens": "app + middleware, every request recorded, RECORD_PARAMS on, HEADERS always",
    "querylens-off": "app + middleware installed, the request not recorded (SAMPLE_RATE 0)",
    "toolbar": "django-debug-toolbar, SQL panel only, shown on every page",
    "zeal": "django-zeal middleware, ZEAL_RAISE off (warns)",
    "nplusone": "nplusone middleware, NPLUSONE_RAISE off (logs)",
    "silk": "django-silk middleware, saving each request and its queries (profiler off)",
}
#: Diagnostic variants: querylens with one part switched off, to price that
#: part with its side effects (garbage collection, CPU caches), which timing
#: the part alone misses. They patch querylens internals by name after set-up.
ABLATIONS = {
    "querylens-nostack": "call-site walk skipped (every stack empty)",
    "querylens-norelations": "relation hooks removed (descriptor and compiler wrappers)",
    "querylens-nostore": "records not kept in the ring buffer",
}
#: Reference variants: the least a per-query recorder costs (``bench.floor``),
#: the yardstick for querylens's own cost. Run when asked for (``--variants``).
REFERENCES = {
    "floor": "an execute wrapper appending (sql, params, many, duration), nothing else",
    "floor-callsite": "the same, plus each query's innermost frame of the project's code",
}
#: ``querylens-alt`` is querylens imported from another folder (``--alt``).
SETTINGS = {
    **{
        variant: f"testproject.settings_bench_{variant.replace('-', '_')}"
        for variant in (*VARIANTS, *REFERENCES)
    },
    **dict.fromkeys([*ABLATIONS, "querylens-alt"], "testproject.settings_bench_querylens"),
}
DEFAULT_DB = Path(__file__).resolve().parent.parent / "bench.sqlite3"

#: The SQL panel's title in the toolbar, e.g. "101 queries in 3.20ms".
_TOOLBAR_COUNT = re.compile(r"(\d+) quer(?:y|ies) in [\d.]+\s*ms")


class BenchmarkError(Exception):
    """A variant does not measure what it claims to (a failed sanity check)."""


def setup_django(variant: str, db: Path | str) -> None:
    os.environ["DJANGO_SETTINGS_MODULE"] = SETTINGS[variant]
    os.environ["QUERYLENS_BENCH_DB"] = str(db)
    import django

    django.setup()
    if variant in ABLATIONS:
        _ablate(variant)
    if variant == "silk":
        from django.core.management import call_command

        # Silk keeps its records in the database: its tables, in the shared
        # file (the other variants never read them).
        call_command("migrate", "silk", verbosity=0, interactive=False)


def _ablate(variant: str) -> None:
    from querylens import capture, lifecycle

    if variant == "querylens-nostack":
        capture.capture_stack = lambda *args, **kwargs: ((), -1)  # type: ignore[assignment]
    elif variant == "querylens-norelations":
        # The hooks are applied by a switch when recording starts: without
        # it, Django's own descriptors and compiler run.
        capture._switches.clear()
    elif variant == "querylens-nostore":
        lifecycle.store = lambda record: True  # type: ignore[assignment]


def prepare_database() -> None:
    """Migrate and seed the (new, empty) database file."""
    from django.apps import apps
    from django.core.management import call_command
    from django.test.utils import override_settings

    from bench.seed import seed

    # Tables straight from the models, as the test runner's MIGRATE=False
    # does: several times faster than replaying every migration.
    no_migrations = {config.label: None for config in apps.get_app_configs()}
    with override_settings(MIGRATION_MODULES=no_migrations):
        call_command("migrate", run_syncdb=True, verbosity=0, interactive=False)
    seed()


def _environ(url: str) -> dict[str, Any]:
    path, _, query = url.partition("?")
    return {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "SCRIPT_NAME": "",
        "QUERY_STRING": query,
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1:8000",
        "HTTP_ACCEPT": "text/html",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }


def _start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
    return lambda data: None


class Worker:
    def __init__(self, variant: str) -> None:
        from django.core.handlers.wsgi import WSGIHandler

        from bench.pages import PAGES

        self.variant = variant
        self.handler = WSGIHandler()
        self.paths = {page: path for page, (path, _) in PAGES.items()}
        self.expected = {page: count for page, (_, count) in PAGES.items()}
        #: CPU nanoseconds spent in the garbage collector (see ``_gc_callback``).
        self.gc_ns = 0
        self._gc_started = 0
        gc.callbacks.append(self._gc_callback)

    def _gc_callback(self, phase: str, info: dict[str, int]) -> None:
        # What a tool keeps alive and allocates shows up here, not in its own
        # functions: the collector's passes grow with the objects it tracks.
        if phase == "start":
            self._gc_started = thread_time_ns()
        else:
            self.gc_ns += thread_time_ns() - self._gc_started

    def request(self, page: str) -> tuple[int, int, Any, bytes]:
        """One request: (wall ns, CPU ns, response, body).

        CPU time is this thread's: on a busy machine it leaves out the time
        the worker waited for a CPU, which wall time counts.
        """
        # A page name, or a path of its own (the scaling pages).
        environ = _environ(self.paths.get(page, page))
        cpu_started = thread_time_ns()
        started = perf_counter_ns()
        response = self.handler(environ, _start_response)
        try:
            body = b"".join(response)
        finally:
            # Fires request_finished, as a WSGI server does.
            response.close()
        wall = perf_counter_ns() - started
        return wall, thread_time_ns() - cpu_started, response, body

    def batch(self, page: str, n: int) -> tuple[list[int], list[int], int]:
        """Wall and CPU nanoseconds of ``n`` requests, and the GC's CPU total."""
        # No gc.collect() between batches: the garbage collector's passes over
        # what a tool keeps alive (querylens's ring buffer of records) are part
        # of that tool's cost, and a collection before each batch would hide
        # them.
        wall, cpu = [], []
        gc_before = self.gc_ns
        for _ in range(n):
            request_wall, request_cpu, _, _ = self.request(page)
            wall.append(request_wall)
            cpu.append(request_cpu)
        return wall, cpu, self.gc_ns - gc_before

    def record_memory(self, n: int = 50) -> dict[str, Any]:
        """Bytes and tracked objects per buffered record of the 100-query page; cache sizes."""
        import tracemalloc

        from querylens import analysis, capture, fingerprint, formatting, relations
        from querylens.storage import get_storage

        storage = get_storage()
        storage.clear()
        gc.collect()
        tracked = len(gc.get_objects())
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for _ in range(n):
                self.request("queries")
            gc.collect()
            used = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        tracked = len(gc.get_objects()) - tracked

        def lru(function: Any) -> tuple[int, int]:
            info = function.cache_info()
            return info.currsize, info.maxsize

        caches = {
            "code objects": (len(capture.code_objects), capture.MAX_CODE_OBJECTS),
            "template files": (len(capture._template_files), 10_000),
            "template origins": (len(capture._origins), 10_000),
            "library files": (len(capture._library_files), capture.MAX_LIBRARY_FILES),
            "model labels": (len(relations._model_labels), 10_000),
            "stacks": (len(capture._shared_stacks), capture.MAX_SHARED_STACKS),
            "call-site lists": (len(analysis._stacks), 10_000),
            "call sites": (len(analysis._callsites), 50_000),
            "fingerprints": lru(fingerprint._fingerprint_short),
            "statement heads": lru(fingerprint._leading_words),
            "long fingerprints": (len(fingerprint._long_cache), fingerprint._LONG_CACHE_SIZE),
            "formatted SQL": lru(formatting.format_sql),
            "highlighted SQL": lru(formatting.highlight_sql),
        }
        return {
            "records": n,
            "buffer_size": getattr(storage, "size", None),
            "bytes_per_record": used / n,
            "tracked_per_record": tracked / n,
            "caches": caches,
        }

    def resident_memory(self, n: int) -> dict[str, Any]:
        """Resident set size before and after ``n`` requests over the pages, in turn."""
        pages = list(self.paths)
        before = _rss_mb()
        for number in range(n):
            self.request(pages[number % len(pages)])
        gc.collect()
        return {"requests": n, "before_mb": before, "after_mb": _rss_mb()}

    def warm_up(self, n: int) -> None:
        for _ in range(n):
            for page in self.paths:
                self.request(page)

    def check(self) -> dict[str, Any]:
        """Prove that the variant measures what it claims; raise otherwise."""
        from django.db import connections
        from django.test.utils import CaptureQueriesContext

        found: dict[str, Any] = {}
        from bench.pages import N_PLUS_ONE

        loaded = {name: name in sys.modules for name in ("querylens", *PEERS.values())}
        wanted = {
            "querylens": self.variant.startswith("querylens"),
            **{module: self.variant == peer for peer, module in PEERS.items()},
        }
        if loaded != wanted:
            raise BenchmarkError(f"{self.variant}: modules loaded {loaded}, wanted {wanted}")
        alt = os.environ.get("QUERYLENS_BENCH_ALT")
        if alt and not _querylens_file().startswith(os.path.join(os.path.abspath(alt), "")):
            raise BenchmarkError(f"{self.variant}: querylens comes from {_querylens_file()}")
        for page, expected in self.expected.items():
            with CaptureQueriesContext(connections["default"]) as captured:
                _, _, response, body = self.request(page)
            result: dict[str, Any] = {"status": response.status_code, "queries": len(captured)}
            problems = []
            if response.status_code != 200:
                problems.append(f"status {response.status_code}")
            # Silk's own writes (its request and query rows) run on the same connection.
            if len(captured) != expected and not (
                self.variant == "silk" and len(captured) > expected
            ):
                problems.append(f"{len(captured)} queries, expected {expected}")
            if b"</body>" not in body:
                problems.append("no </body> in the page")
            toolbar = b'id="djDebug"' in body
            headers = {k: v for k, v in response.items() if k.startswith("X-QueryLens-")}
            if self.variant.startswith("querylens") and self.variant != "querylens-off":
                result["headers"] = headers
                n_plus_one = N_PLUS_ONE[page]
                if headers.get("X-QueryLens-Queries") != str(expected):
                    problems.append(f"X-QueryLens-Queries {headers.get('X-QueryLens-Queries')}")
                if headers.get("X-QueryLens-NPlusOne") != str(n_plus_one):
                    problems.append(f"X-QueryLens-NPlusOne {headers.get('X-QueryLens-NPlusOne')}")
            elif headers:
                problems.append(f"querylens headers in the {self.variant} variant")
            if self.variant in REFERENCES:
                problems += _floor_problems(self.variant, response, expected, result)
            if self.variant == "toolbar":
                match = _TOOLBAR_COUNT.search(body.decode())
                result["toolbar_sql_panel"] = match.group(0) if match else None
                if not toolbar:
                    problems.append("the toolbar is not in the page")
                elif match is None or int(match.group(1)) != expected:
                    problems.append(f"the SQL panel says {result['toolbar_sql_panel']!r}")
            elif toolbar:
                problems.append(f"the toolbar is in the {self.variant} page")
            if self.variant == "none" and connections["default"].execute_wrappers:
                problems.append("an execute wrapper is installed")
            if problems:
                raise BenchmarkError(f"{self.variant} {page}: " + "; ".join(problems))
            found[page] = result
        if self.variant in ("zeal", "nplusone", "silk"):
            found["detects"] = self._peer_sees_the_n_plus_one()
        return found

    def _peer_sees_the_n_plus_one(self) -> str:
        """Prove that a peer is at work: it reports the N+1 page's loop its own way."""
        import logging
        import warnings

        if self.variant == "zeal":
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                self.request("nplusone")
            messages = [str(w.message) for w in caught if "N+1" in str(w.message)]
            if not messages:
                raise BenchmarkError("zeal: no N+1 warning on the N+1 page")
            return messages[0][:120]
        if self.variant == "nplusone":
            seen: list[str] = []

            class Keep(logging.Handler):
                def emit(self, record: logging.LogRecord) -> None:
                    seen.append(record.getMessage())

            logger = logging.getLogger("nplusone")
            handler, level = Keep(), logger.level
            logger.addHandler(handler)
            logger.setLevel(logging.DEBUG)
            try:
                self.request("nplusone")
            finally:
                logger.removeHandler(handler)
                logger.setLevel(level)
            if not seen:
                raise BenchmarkError("nplusone: no N+1 logged on the N+1 page")
            return seen[0][:120]
        from silk.models import Request, SQLQuery  # type: ignore[import-untyped]

        requests, queries = Request.objects.count(), SQLQuery.objects.count()
        self.request("nplusone")
        if Request.objects.count() != requests + 1 or SQLQuery.objects.count() < queries + 101:
            raise BenchmarkError("silk: the N+1 page and its 101 queries were not saved")
        return "saved the request and its 101 queries"


def _floor_problems(
    variant: str, response: Any, expected: int, result: dict[str, Any]
) -> list[str]:
    """What a reference variant's response got wrong (``bench.floor``)."""
    from bench.floor import CALLSITE_HEADER, QUERIES_HEADER

    problems = []
    result["queries_seen"] = response.get(QUERIES_HEADER)
    if result["queries_seen"] != str(expected):
        problems.append(f"{QUERIES_HEADER} {result['queries_seen']}")
    if variant == "floor-callsite":
        # Every page's queries come from the benchmark's own views (or the
        # figures they compute): a call site elsewhere is a walk gone wrong.
        result["callsite"] = response.get(CALLSITE_HEADER)
        if not str(result["callsite"]).startswith(("views.py:", "pages.py:")):
            problems.append(f"{CALLSITE_HEADER} {result['callsite']}")
    return problems


def _rss_mb() -> float:
    """This process's resident memory in MB (Linux), or NaN where unknown."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def info(variant: str) -> dict[str, Any]:
    """What this process runs: versions, settings, and anything that skews timing."""
    from importlib.metadata import PackageNotFoundError, version

    import django
    from django.conf import settings

    def installed(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    return {
        "variant": variant,
        "pid": os.getpid(),
        "python": sys.version.split()[0],
        "implementation": sys.implementation.name,
        "django": django.get_version(),
        "debug_toolbar": installed("django-debug-toolbar") if variant == "toolbar" else None,
        "querylens": installed("querylens") if variant.startswith("querylens") else None,
        "ablation": ABLATIONS.get(variant),
        "querylens_file": _querylens_file() if "querylens" in sys.modules else None,
        "settings": os.environ["DJANGO_SETTINGS_MODULE"],
        "debug": settings.DEBUG,
        "middleware": list(settings.MIDDLEWARE),
        "toolbar_panels": list(getattr(settings, "DEBUG_TOOLBAR_PANELS", [])),
        "querylens_settings": dict(getattr(settings, "QUERYLENS", {})),
        # A tracer (coverage, a debugger) makes every variant slower, unevenly.
        "traced": sys.gettrace() is not None or _monitored(),
        "gc_enabled": gc.isenabled(),
    }


def _querylens_file() -> str:
    return os.path.dirname(os.path.abspath(sys.modules["querylens"].__file__ or ""))


def _monitored() -> bool:
    monitoring = getattr(sys, "monitoring", None)  # Python 3.12+
    if monitoring is None:
        return False
    return any(monitoring.get_tool(tool) is not None for tool in range(6))


def serve(worker: Worker, variant: str, warmup: int, protocol: TextIO) -> None:
    """Answer the parent's commands until it says quit or closes stdin."""

    def reply(message: dict[str, Any]) -> None:
        protocol.write(json.dumps(message) + "\n")
        protocol.flush()

    try:
        checks = worker.check()
        worker.warm_up(warmup)
    except Exception as exc:
        reply({"error": f"{type(exc).__name__}: {exc}"})
        raise
    reply({"ready": True, "info": info(variant), "checks": checks})
    for line in sys.stdin:
        command = json.loads(line)
        if command.get("quit"):
            break
        if command.get("memory") == "record":
            reply({"memory": worker.record_memory()})
            continue
        if command.get("memory") == "rss":
            reply({"memory": worker.resident_memory(int(command["n"]))})
            continue
        # Untimed requests first: the process was idle while the others ran,
        # and its first request after that pays for cold CPU caches.
        for _ in range(int(command.get("warm", 0))):
            worker.request(command["page"])
        wall, cpu, gc_ns = worker.batch(command["page"], int(command["n"]))
        reply({"wall_ns": wall, "cpu_ns": cpu, "gc_ns": gc_ns})


def standalone(worker: Worker, pages: list[str], n: int, warmup: int, cprofile: str | None) -> None:
    """Time ``n`` requests of each page and print medians (for profilers)."""
    checks = worker.check()
    print(json.dumps({"info": info(worker.variant), "checks": checks}, indent=2))
    worker.warm_up(warmup)
    profiler = None
    if cprofile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    results = {page: worker.batch(page, n) for page in pages}
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(cprofile)
        import pstats

        pstats.Stats(cprofile).sort_stats("tottime").print_stats(30)
    for page, (wall, cpu, gc_ns) in results.items():
        print(
            f"{worker.variant:10} {page:10} median {statistics.median(wall) / 1e6:8.3f} ms "
            f"wall, {statistics.median(cpu) / 1e6:8.3f} ms CPU, garbage collector "
            f"{gc_ns / n / 1e6:.3f} ms CPU per request, over {n} requests"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", choices=list(SETTINGS), required=True)
    parser.add_argument("--db", default=str(DEFAULT_DB), help="SQLite file (created if missing)")
    parser.add_argument("--warmup", type=int, default=100, help="requests per page first")
    parser.add_argument("--setup", action="store_true", help="migrate and seed --db, then exit")
    parser.add_argument("--standalone", type=int, metavar="N", help="time N requests per page")
    parser.add_argument("--page", action="append", help="with --standalone: only this page")
    parser.add_argument("--cprofile", metavar="FILE", help="with --standalone: cProfile to FILE")
    args = parser.parse_args(argv)

    if args.setup:
        setup_django(args.variant, args.db)
        prepare_database()
        return
    if args.standalone is not None:
        if not Path(args.db).exists():
            # A separate process: the database must be made without the
            # instrumentation's hooks, and this one must not import them twice.
            import subprocess

            subprocess.run(
                [sys.executable, __file__, "--variant", "none", "--setup", "--db", args.db],
                check=True,
            )
        setup_django(args.variant, args.db)
        from bench.pages import PAGES

        standalone(
            Worker(args.variant),
            args.page or list(PAGES),
            args.standalone,
            args.warmup,
            args.cprofile,
        )
        return

    # The protocol owns the real stdout; anything else printed (a stray
    # print, a library's output) goes to stderr instead of corrupting it.
    protocol = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    setup_django(args.variant, args.db)
    serve(Worker(args.variant), args.variant, args.warmup, protocol)


if __name__ == "__main__":
    main()
