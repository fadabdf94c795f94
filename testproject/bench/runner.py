"""The parent side of the benchmark: workers, interleaved rounds, report.

Each variant runs in its own long-lived worker process (``bench.worker``).
Every round sends each (page, variant) pair one batch of requests, in an
order shuffled per round with a fixed seed, so slow spells of a noisy machine
hit every variant alike. Medians are compared, never single timings.
"""

from __future__ import annotations

import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from bench.pages import PAGES, SCALING, TITLES, scaling_page
from bench.worker import ABLATIONS, DESCRIPTIONS, PEERS, REFERENCES, VARIANTS

PROJECT_DIR = Path(__file__).resolve().parent.parent
REPO_ROOT = PROJECT_DIR.parent
#: The target: full recording at most this many times the uninstrumented CPU time.
TARGET = 1.05
#: A request that is not recorded (sampled out) must cost at most this much more.
OFF_TARGET = 1.01


def available_variants() -> tuple[str, ...]:
    """Every variant whose tool is installed here (the peers are optional)."""
    from importlib.util import find_spec

    return tuple(
        variant for variant in VARIANTS if variant not in PEERS or find_spec(PEERS[variant])
    )


#: Environment variables that would slow a worker down (import timing, tracing
#: allocations, debug allocators): the workers never inherit them.
_DISTORTING_ENV = (
    "PYTHONPROFILEIMPORTTIME",
    "PYTHONTRACEMALLOC",
    "PYTHONDEVMODE",
    "PYTHONMALLOC",
    "PYTHONMALLOCSTATS",
    "PYTHONASYNCIODEBUG",
    "PYTHONBREAKPOINT",
)


class BenchmarkFailed(Exception):
    pass


@dataclass
class Options:
    rounds: int = 15
    requests: int = 20
    warmup: int = 100
    seed: int = 0
    variants: tuple[str, ...] = VARIANTS
    pages: tuple[str, ...] = tuple(PAGES)
    db: str | None = None
    debug: bool = False
    #: A folder holding another querylens package (a patched checkout, say),
    #: measured as the variant ``querylens-alt``.
    alt: str | None = None
    #: Peers whose worker could not start, with the reason.
    unavailable: dict[str, str] = field(default_factory=dict)
    #: Untimed requests at the start of each batch (the worker was idle before it).
    batch_warmup: int = 3
    #: Rounds of the scaling section (0: skip it).
    scaling_rounds: int = 5
    #: Requests per worker for the resident-memory figure (0: skip it).
    memory_requests: int = 0
    #: Time the admin pages with a full buffer (``bench.render``).
    render: bool = False
    #: Seconds per run of the gunicorn load test (``tests/loadtest.py``); 0: skip it.
    load_seconds: int = 0


@dataclass
class WorkerProcess:
    variant: str
    process: subprocess.Popen[str]
    stderr: IO[str]
    info: dict[str, Any] = field(default_factory=dict)
    checks: dict[str, Any] = field(default_factory=dict)

    def send(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(message) + "\n")
        self.process.stdin.flush()

    def receive(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            self.process.wait()
            raise BenchmarkFailed(
                f"the {self.variant} worker exited with status "
                f"{self.process.returncode}:\n{self.stderr_tail()}"
            )
        message: dict[str, Any] = json.loads(line)
        if "error" in message:
            raise BenchmarkFailed(f"the {self.variant} worker failed: {message['error']}")
        return message

    def stderr_tail(self, lines: int = 30) -> str:
        self.stderr.seek(0)
        return "".join(self.stderr.readlines()[-lines:])

    def stop(self, *, kill: bool = False) -> None:
        if kill and self.process.poll() is None:
            # Still checking or warming up: it would not read "quit" soon.
            self.process.kill()
        if self.process.poll() is None:
            try:
                self.send({"quit": True})
                self.process.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()
        self.stderr.close()


def _worker_env(db: Path, debug: bool, alt: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _DISTORTING_ENV}
    env.pop("QUERYLENS_BENCH_ALT", None)
    path = [str(PROJECT_DIR), str(REPO_ROOT)]
    if alt:
        # Ahead of this checkout (and of an editable install, whose finder
        # comes after the path): this worker imports the other querylens.
        path.insert(1, alt)
        env["QUERYLENS_BENCH_ALT"] = alt
    if env.get("PYTHONPATH"):
        path.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(path)
    env["QUERYLENS_BENCH_DB"] = str(db)
    env["QUERYLENS_BENCH_DEBUG"] = "1" if debug else "0"
    env.pop("DJANGO_SETTINGS_MODULE", None)  # each worker picks its own
    return env


def _worker_command(variant: str, db: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "bench.worker", "--variant", variant, "--db", str(db), *extra]


def prepare_database(db: Path, debug: bool) -> None:
    result = subprocess.run(
        _worker_command("none", db, "--setup"),
        cwd=PROJECT_DIR,
        env=_worker_env(db, debug),
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise BenchmarkFailed(f"could not prepare {db}:\n{result.stderr[-3000:]}")


def start_workers(options: Options, db: Path) -> list[WorkerProcess]:
    workers = []
    for variant in options.variants:
        stderr = tempfile.TemporaryFile("w+")  # noqa: SIM115 (closed in stop())
        process = subprocess.Popen(
            _worker_command(variant, db, "--warmup", str(options.warmup)),
            cwd=PROJECT_DIR,
            env=_worker_env(db, options.debug, options.alt if variant == "querylens-alt" else None),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
        workers.append(WorkerProcess(variant, process, stderr))
    # They check and warm up in parallel; nothing is timed yet.
    started = []
    try:
        for worker in workers:
            try:
                ready = worker.receive()
            except BenchmarkFailed as exc:
                if worker.variant not in PEERS or worker.variant == "toolbar":
                    raise
                # Another tool that does not run here (nplusone on Django 6.1,
                # say): reported, not measured.
                options.unavailable[worker.variant] = str(exc).splitlines()[0][:300]
                worker.stop(kill=True)
                continue
            worker.info, worker.checks = ready["info"], ready["checks"]
            started.append(worker)
    except BaseException:
        for worker in workers:
            worker.stop(kill=True)
        raise
    options.variants = tuple(worker.variant for worker in started)
    return started


def machine_info() -> dict[str, Any]:
    cpu_model = platform.processor() or None
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "platform": platform.platform(),
        "cpu_model": cpu_model,
        "cpu_count": os.cpu_count(),
        "cpu_usable": usable,
        "load_average": _load_average(),
    }


def _load_average() -> list[float] | None:
    try:
        return [round(load, 2) for load in os.getloadavg()]
    except OSError:
        return None


def summarise(samples: list[int]) -> dict[str, float]:
    """Milliseconds: median and quartiles of the per-request timings."""
    ms = sorted(ns / 1e6 for ns in samples)
    if len(ms) >= 2:
        p25, _, p75 = statistics.quantiles(ms, n=4, method="inclusive")
    else:
        p25 = p75 = ms[0]
    return {
        "median_ms": statistics.median(ms),
        "p25_ms": p25,
        "p75_ms": p75,
        "mean_ms": statistics.fmean(ms),
        "n": len(ms),
    }


def run(options: Options, progress: IO[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; return every figure the report prints."""
    started = time.monotonic()
    machine = machine_info()
    with tempfile.TemporaryDirectory(prefix="querylens-bench-") as tmp:
        db = Path(options.db) if options.db else Path(tmp) / "bench.sqlite3"
        if not db.exists():
            if progress:
                progress.write(f"preparing the database {db}\n")
            prepare_database(db, options.debug)
        if progress:
            progress.write(
                f"starting workers {', '.join(options.variants)} "
                f"(checks, then {options.warmup} warm-up requests per page)\n"
            )
        workers = start_workers(options, db)
        try:
            samples, per_round, gc_ms = _rounds(options, workers, progress)
            scaling = _scaling(options, workers, progress) if options.scaling_rounds else None
            memory = _memory(options, workers, progress)
        finally:
            for worker in workers:
                worker.stop()
    machine["load_average_end"] = _load_average()
    results = _results(
        options, machine, workers, samples, per_round, gc_ms, time.monotonic() - started
    )
    results["scaling"] = scaling
    results["memory"] = memory
    if options.render:
        if progress:
            progress.write("rendering the admin pages with full buffers\n")
        results["render"] = render_pages()
    if options.load_seconds:
        if progress:
            progress.write("load test: gunicorn, 4 workers, wrk on loopback\n")
        results["load"] = load_test(options.load_seconds)
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    return results


def render_pages() -> dict[str, Any]:
    """``bench.render`` in a process of its own, with the demo's settings (the admin)."""
    env = {k: v for k, v in os.environ.items() if k not in _DISTORTING_ENV}
    env["DJANGO_SETTINGS_MODULE"] = "testproject.settings"
    env["PYTHONPATH"] = os.pathsep.join([str(PROJECT_DIR), str(REPO_ROOT)])
    done = subprocess.run(
        [sys.executable, "-m", "bench.render"],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if done.returncode != 0:
        raise BenchmarkFailed(f"rendering the pages failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def load_test(seconds: int) -> dict[str, Any]:
    """``tests/loadtest.py`` (gunicorn, 4 workers, wrk): medians per mode, or why it did not run."""
    import shutil

    if shutil.which("wrk") is None:
        return {"skipped": "wrk is not installed (apt-get install wrk)"}
    with tempfile.TemporaryDirectory(prefix="querylens-load-") as tmp:
        out = Path(tmp) / "load.json"
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "tests.loadtest",
                "--duration",
                str(seconds),
                "--runs",
                "3",
                "--json",
                str(out),
            ],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=seconds * 20 + 600,
        )
        if done.returncode != 0 or not out.exists():
            return {"skipped": f"the load test failed: {(done.stderr or done.stdout)[-500:]}"}
        runs = json.loads(out.read_text())
    modes: dict[str, dict[str, float]] = {}
    for mode in dict.fromkeys(run["mode"] for run in runs):
        mine = [run for run in runs if run["mode"] == mode]
        modes[mode] = {
            key: statistics.median(run[key] for run in mine)
            for key in ("requests_per_second", "p50_ms", "p99_ms", "cpu_ms_per_request")
        }
        modes[mode]["errors"] = sum(run["errors"] for run in mine)
    return {"seconds": seconds, "runs": len(runs), "modes": modes}


def _scaling(
    options: Options, workers: list[WorkerProcess], progress: IO[str] | None
) -> dict[str, Any] | None:
    """Per-query overhead by queries per request and by stack depth (querylens vs none)."""
    by_variant = {worker.variant: worker for worker in workers}
    if "none" not in by_variant or "querylens" not in by_variant:
        return None
    pair = (by_variant["none"], by_variant["querylens"])
    rows = []
    for title, queries, depth in SCALING:
        path = scaling_page(queries, depth)
        # About 2,000 queries per batch: big pages get fewer requests.
        n = max(2, min(20, 2000 // queries))
        for worker in pair:  # untimed: the first request of a shape warms caches
            worker.send({"page": path, "n": 2})
            worker.receive()
        cpu: dict[str, list[float]] = {"none": [], "querylens": []}
        for number in range(options.scaling_rounds):
            order = list(pair) if number % 2 == 0 else list(reversed(pair))
            for worker in order:
                worker.send({"page": path, "n": n, "warm": 1})
                answer = worker.receive()
                cpu[worker.variant].append(statistics.median(answer["cpu_ns"]) / 1e6)
        none_ms, querylens_ms = statistics.median(cpu["none"]), statistics.median(cpu["querylens"])
        ratios = [a / b for a, b in zip(cpu["querylens"], cpu["none"], strict=True)]
        rows.append(
            {
                "title": title,
                "queries": queries,
                "depth": depth,
                "none_ms": none_ms,
                "querylens_ms": querylens_ms,
                "ratio": querylens_ms / none_ms,
                "paired": paired(ratios),
                "overhead_us_per_query": (querylens_ms - none_ms) * 1000 / queries,
            }
        )
        if progress:
            progress.write(f"scaling: {title} done\n")
    return {"rounds": options.scaling_rounds, "rows": rows}


def _memory(
    options: Options, workers: list[WorkerProcess], progress: IO[str] | None
) -> dict[str, Any]:
    """Bytes per buffered record, module caches and their bounds, resident memory."""
    by_variant = {worker.variant: worker for worker in workers}
    found: dict[str, Any] = {}
    if "querylens" in by_variant:
        worker = by_variant["querylens"]
        worker.send({"memory": "record"})
        found["record"] = worker.receive()["memory"]
    if options.memory_requests:
        found["rss"] = {}
        for variant in ("none", "querylens", "querylens-off"):
            if variant in by_variant:
                worker = by_variant[variant]
                worker.send({"memory": "rss", "n": options.memory_requests})
                found["rss"][variant] = worker.receive()["memory"]
                if progress:
                    progress.write(f"memory: {options.memory_requests} requests in {variant}\n")
    return found


#: What each worker measures per request, and how the report names it.
CLOCKS = {
    "wall": "wall-clock time (perf_counter_ns)",
    "cpu": "CPU time of the worker thread (thread_time_ns)",
}
Samples = dict[str, dict[str, dict[str, list[int]]]]  # clock -> page -> variant
RoundMedians = dict[str, dict[str, dict[str, list[float]]]]


def _rounds(
    options: Options, workers: list[WorkerProcess], progress: IO[str] | None
) -> tuple[Samples, RoundMedians, dict[str, dict[str, float]]]:
    by_variant = {worker.variant: worker for worker in workers}
    samples: Samples = {
        clock: {page: {v: [] for v in options.variants} for page in options.pages}
        for clock in CLOCKS
    }
    per_round: RoundMedians = {
        clock: {page: {v: [] for v in options.variants} for page in options.pages}
        for clock in CLOCKS
    }
    gc_ms = {page: dict.fromkeys(options.variants, 0.0) for page in options.pages}
    rng = random.Random(options.seed)
    for number in range(options.rounds):
        batches = [(page, variant) for page in options.pages for variant in options.variants]
        rng.shuffle(batches)
        for page, variant in batches:
            worker = by_variant[variant]
            worker.send({"page": page, "n": options.requests, "warm": options.batch_warmup})
            answer = worker.receive()
            gc_ms[page][variant] += answer["gc_ns"] / 1e6
            for clock in CLOCKS:
                timings = answer[f"{clock}_ns"]
                samples[clock][page][variant].extend(timings)
                per_round[clock][page][variant].append(statistics.median(timings) / 1e6)
        if progress:
            progress.write(f"round {number + 1}/{options.rounds} done\n")
    requests = options.rounds * options.requests
    gc_per_request = {
        page: {variant: total / requests for variant, total in totals.items()}
        for page, totals in gc_ms.items()
    }
    return samples, per_round, gc_per_request


def _compare(
    options: Options, samples: dict[str, list[int]], per_round: dict[str, list[float]]
) -> dict[str, Any]:
    """One page under one clock: each variant's figures and the ratios."""
    stats = {variant: summarise(samples[variant]) for variant in options.variants}
    median = {variant: stats[variant]["median_ms"] for variant in options.variants}
    ratios: dict[str, float] = {}
    round_ratios: dict[str, list[float]] = {}
    pairs = [(variant, "none") for variant in options.variants if variant != "none"]
    peers = [("querylens", peer) for peer in PEERS if peer in options.variants]
    # What querylens costs beyond the least any per-query recorder costs.
    floors = [("querylens", floor) for floor in REFERENCES if floor in options.variants]
    for variant, base in [*pairs, *peers, *floors]:
        if variant in median and base in median:
            key = f"{variant}/{base}"
            ratios[key] = median[variant] / median[base]
            # The same ratio within each round: shows whether one slow spell
            # of the machine decided the overall figure.
            round_ratios[key] = [
                a / b for a, b in zip(per_round[variant], per_round[base], strict=True)
            ]
    return {
        "variants": stats,
        "ratios": ratios,
        "paired": {key: paired(values) for key, values in round_ratios.items()},
        "round_ratios": round_ratios,
        "round_medians_ms": per_round,
    }


def paired(round_ratios: list[float], resamples: int = 2000) -> dict[str, Any]:
    """The median of the per-round ratios, with a bootstrap 95% interval.

    Each round's batches ran seconds apart, so their ratio is the comparison
    least disturbed by the machine's slow and fast spells; the interval says
    how far another run of the same length could land.
    """
    rng = random.Random(0)
    medians = sorted(
        statistics.median(rng.choices(round_ratios, k=len(round_ratios))) for _ in range(resamples)
    )
    return {
        "median": statistics.median(round_ratios),
        "ci95": [medians[int(resamples * 0.025)], medians[int(resamples * 0.975) - 1]],
    }


def _results(
    options: Options,
    machine: dict[str, Any],
    workers: list[WorkerProcess],
    samples: Samples,
    per_round: RoundMedians,
    gc_ms: dict[str, dict[str, float]],
    elapsed: float,
) -> dict[str, Any]:
    pages: dict[str, Any] = {}
    for page in options.pages:
        pages[page] = {
            "title": TITLES[page],
            "path": PAGES[page][0],
            "queries": PAGES[page][1],
            "gc_cpu_ms_per_request": gc_ms[page],
            **{
                clock: _compare(options, samples[clock][page], per_round[clock][page])
                for clock in CLOCKS
            },
        }
    infos = {worker.variant: worker.info for worker in workers}
    any_info = next(iter(infos.values()))
    return {
        "options": {
            "rounds": options.rounds,
            "requests": options.requests,
            "warmup": options.warmup,
            "seed": options.seed,
            "variants": list(options.variants),
            "pages": list(options.pages),
            "debug": options.debug,
            "alt": options.alt,
            "unavailable": options.unavailable,
            "batch_warmup": options.batch_warmup,
        },
        "machine": machine,
        "versions": {
            "python": any_info["python"],
            "django": any_info["django"],
            "debug_toolbar": infos.get("toolbar", {}).get("debug_toolbar"),
            "querylens": infos.get("querylens", {}).get("querylens"),
        },
        "workers": infos,
        "checks": {worker.variant: worker.checks for worker in workers},
        "clocks": CLOCKS,
        "target": TARGET,
        "off_target": OFF_TARGET,
        "pages": pages,
        "elapsed_s": round(elapsed, 1),
    }


def report(results: dict[str, Any]) -> str:
    """The human-readable tables: one per clock."""
    options, machine, versions = results["options"], results["machine"], results["versions"]
    lines = [
        f"querylens benchmark: {options['rounds']} rounds x {options['requests']} requests "
        f"per page and variant, interleaved (order shuffled per round, seed {options['seed']}), "
        f"after {options['warmup']} warm-up requests per page, and "
        f"{options.get('batch_warmup', 0)} untimed ones at the start of each batch",
        f"machine: {machine['platform']}; {machine['cpu_model'] or 'unknown CPU'}; "
        f"{machine['cpu_count']} CPUs ({machine['cpu_usable']} usable); load average "
        f"{_load(machine['load_average'])} at start, {_load(machine['load_average_end'])} at end",
        f"python {versions['python']}, Django {versions['django']}, "
        f"django-debug-toolbar {versions['debug_toolbar'] or '-'}, "
        f"querylens {versions['querylens'] or '(from the checkout)'}",
        "database: SQLite file (100 books, 25 authors), one persistent connection per worker; "
        f"DEBUG={options['debug']}",
        "variants: "
        + "; ".join(
            f"{variant} = {DESCRIPTIONS[variant]}"
            for variant in options["variants"]
            if variant in DESCRIPTIONS
        ),
        *(
            f"{variant}: not measured here ({reason})"
            for variant, reason in options.get("unavailable", {}).items()
        ),
        *(
            f"{variant} = {REFERENCES[variant]} (reference, bench/floor.py)"
            for variant in options["variants"]
            if variant in REFERENCES
        ),
        *(
            f"{variant} = querylens, {ABLATIONS[variant]} (diagnostic)"
            for variant in options["variants"]
            if variant in ABLATIONS
        ),
        *(
            f"querylens-alt = querylens imported from {info['querylens_file']}"
            for variant, info in results["workers"].items()
            if variant == "querylens-alt"
        ),
    ]
    traced = [v for v, info in results["workers"].items() if info.get("traced")]
    if traced:
        lines.append(
            f"WARNING: a tracer (coverage? a debugger?) is active in {', '.join(traced)}: "
            "these timings mean nothing"
        )
    for clock, description in results["clocks"].items():
        lines += ["", f"ms per request, {description}:", *_table(results, clock)]
    if results.get("scaling"):
        lines += ["", *_scaling_table(results["scaling"])]
    if results.get("memory"):
        lines += ["", *_memory_lines(results["memory"])]
    if results.get("render"):
        lines += ["", *_render_lines(results["render"])]
    if results.get("load"):
        lines += ["", *_load_lines(results["load"])]
    lines.append(f"(took {results['elapsed_s']} s)")
    return "\n".join(lines)


def _scaling_table(scaling: dict[str, Any]) -> list[str]:
    header = (
        f"{'page':<30} {'none ms':>9} {'querylens ms':>13} {'ratio':>7} "
        f"{'paired [95% CI]':>22} {'us per query':>13}"
    )
    lines = [
        f"how the cost scales: CPU ms per request, medians of {scaling['rounds']} rounds "
        "(querylens vs none; the extra microseconds per query)",
        header,
        "-" * len(header),
    ]
    for row in scaling["rows"]:
        lines.append(
            f"{row['title']:<30} {row['none_ms']:>9.3f} {row['querylens_ms']:>13.3f} "
            f"{row['ratio']:>6.3f}x {_paired(row['paired']):>22} "
            f"{row['overhead_us_per_query']:>13.2f}"
        )
    return lines


def _render_lines(render: dict[str, Any]) -> list[str]:
    header = (
        f"{'buffer':<28} {'hotspots':>9} {'hotspots JSON':>14} {'requests':>9} {'one request':>12}"
    )
    lines = [
        f"admin pages with a full buffer, ms (median of {render['repeat']}, a superuser):",
        header,
        "-" * len(header),
    ]
    for row in render["rows"]:
        label = f"{row['records']:,} records x {row['queries']:,} queries"
        lines.append(
            f"{label:<28} {row['hotspots_ms']:>9.1f} {row['hotspots_json_ms']:>14.1f} "
            f"{row['requests_ms']:>9.1f} {row['request_ms']:>12.1f}"
        )
    return lines


def _load_lines(load: dict[str, Any]) -> list[str]:
    if "skipped" in load:
        return [f"load test: skipped ({load['skipped']})"]
    lines = [
        f"load test: gunicorn with 4 sync workers, wrk on loopback, 21-query N+1 page, "
        f"{load['seconds']} s runs, medians of {load['runs'] // max(len(load['modes']), 1)} runs:"
    ]
    for mode, figures in load["modes"].items():
        lines.append(
            f"  {mode:<8} {figures['requests_per_second']:>8.1f} requests/s, p50 "
            f"{figures['p50_ms']:.1f} ms, p99 {figures['p99_ms']:.1f} ms, "
            f"{figures['cpu_ms_per_request']:.2f} CPU ms per request, {figures['errors']:.0f} errors"
        )
    return lines


def _memory_lines(memory: dict[str, Any]) -> list[str]:
    lines = ["memory:"]
    record = memory.get("record")
    if record:
        lines.append(
            f"one buffered record of the 100-query page: {record['bytes_per_record']:,.0f} bytes "
            f"(traced allocations of {record['records']} records, buffer of {record['buffer_size']}), "
            f"{record['tracked_per_record']:.1f} objects the garbage collector tracks"
        )
        caches = ", ".join(
            f"{name} {size:,}/{bound:,}" if bound else f"{name} {size:,}/unbounded"
            for name, (size, bound) in record["caches"].items()
        )
        lines.append(f"module caches (entries/bound): {caches}")
    for variant, rss in memory.get("rss", {}).items():
        lines.append(
            f"resident memory, {variant}: {rss['before_mb']:.1f} MB after warm-up, "
            f"{rss['after_mb']:.1f} MB after {rss['requests']:,} more requests"
        )
    return lines


def _table(results: dict[str, Any], clock: str) -> list[str]:
    width = max(10, *(len(variant) for variant in results["options"]["variants"]))
    header = (
        f"{'page':<24} {'variant':<{width}} {'median ms':>10} {'p25 ms':>9} {'p75 ms':>9} "
        f"{'vs none':>8}  {'paired ratio [95% CI]':>22}"
    )
    lines = [header, "-" * len(header)]
    for page in results["pages"].values():
        figures = page[clock]
        for position, (variant, stats) in enumerate(figures["variants"].items()):
            ratio = figures["ratios"].get(f"{variant}/none")
            pair = figures["paired"].get(f"{variant}/none")
            label = f"{page['title']} ({page['queries']} q)" if position == 0 else ""
            lines.append(
                f"{label:<24} {variant:<{width}} {stats['median_ms']:>10.3f} {stats['p25_ms']:>9.3f} "
                f"{stats['p75_ms']:>9.3f} {_ratio(ratio):>8}  {_paired(pair):>22}"
            )
    for page in results["pages"].values():
        ratios = page[clock]["ratios"]
        parts = [f"{key} {ratio:.3f}x" for key, ratio in ratios.items() if key.endswith("/none")]
        if "querylens/toolbar" in ratios:
            ratio = ratios["querylens/toolbar"]
            parts.append(
                f"querylens/toolbar {ratio:.3f}x (querylens "
                f"{'faster' if ratio < 1 else 'slower'} than the toolbar by "
                f"{abs(1 - ratio) * 100:.1f}%)"
            )
        parts += [
            f"querylens/{floor} {ratios[f'querylens/{floor}']:.3f}x"
            for floor in REFERENCES
            if f"querylens/{floor}" in ratios
        ]
        if parts:
            lines.append(f"{page['title']}: " + "; ".join(parts))
    verdicts = []
    target = results["target"]
    for page in results["pages"].values():
        peers = {
            key: ratio
            for key, ratio in page[clock]["ratios"].items()
            if key.startswith("querylens/") and key.split("/")[1] in PEERS
        }
        if peers:
            behind = [key.split("/")[1] for key, ratio in peers.items() if ratio >= 1]
            lines.append(
                f"{page['title']}: querylens "
                + ("ahead of every peer" if not behind else f"NOT ahead of {', '.join(behind)}")
                + " ("
                + ", ".join(f"{key} {ratio:.3f}x" for key, ratio in peers.items())
                + ")"
            )
        off = page[clock]["ratios"].get("querylens-off/none")
        if off is not None:
            low, high = page[clock]["paired"]["querylens-off/none"]["ci95"]
            lines.append(
                f"{page['title']}: not recorded (sampled out) {off:.3f}x, paired 95% CI "
                f"{low:.3f}x-{high:.3f}x; target <= {results['off_target']:.2f}x "
                + ("met" if off <= results["off_target"] else "NOT met")
            )
    for page in results["pages"].values():
        ratio = page[clock]["ratios"].get("querylens/none")
        if ratio is not None:
            low, high = page[clock]["paired"]["querylens/none"]["ci95"]
            verdict = "met" if ratio <= target else "NOT met"
            if low <= target < high:
                verdict += f" (uncertain: the paired 95% CI {low:.3f}x-{high:.3f}x spans it)"
            verdicts.append(f"{page['title']} {ratio:.3f}x {verdict}")
    if verdicts:
        lines.append(f"target querylens/none <= {results['target']:.2f}x: " + "; ".join(verdicts))
    if clock == "cpu":
        for page in results["pages"].values():
            spent = ", ".join(
                f"{variant} {ms:.2f}" for variant, ms in page["gc_cpu_ms_per_request"].items()
            )
            lines.append(f"{page['title']}: garbage collector, mean CPU ms per request: {spent}")
    return lines


def _ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}x"


def _paired(pair: dict[str, Any] | None) -> str:
    if not pair:
        return ""
    low, high = pair["ci95"]
    return f"{pair['median']:.3f}x [{low:.2f}-{high:.2f}]"


def _load(values: list[float] | None) -> str:
    return "/".join(f"{v:.2f}" for v in values) if values else "unknown"
