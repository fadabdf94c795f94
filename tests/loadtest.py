"""Requests per second with and without querylens, under gunicorn with 4 workers.

    .venv/bin/python -m tests.loadtest [--duration 10] [--runs 3] [--json out.json]

Serves tests/views.py's ``fk_loop`` page (21 queries: one list of 20 books,
then each book's author, an N+1) from a SQLite file, once per mode, each by
its own gunicorn (4 sync workers, loopback):

- ``off``: querylens not installed at all (neither app nor middleware);
- ``memory``: the middleware with ``MemoryStorage``;
- ``cache``: the middleware with ``CacheStorage`` on Redis (127.0.0.1:6379/15);
- ``sampled``: like ``cache`` with ``SAMPLE_RATE = 0.1``.

Each run is ``wrk --latency`` for ``--duration`` seconds at ``--connections``
connections; modes are interleaved (the order rotates every round) so a
machine that gets busier halfway through hurts every mode alike. Needs
Debian's ``wrk`` (``apt-get install wrk``) and Redis. Prints one line per run
and a summary of medians; ``--json`` writes every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from tests.gunicorn_server import Server, fetch, prepare_database

MODES: dict[str, dict[str, str]] = {
    "off": {"QUERYLENS_MP_STORAGE": "off"},
    "memory": {"QUERYLENS_MP_STORAGE": "memory"},
    "cache": {"QUERYLENS_MP_STORAGE": "cache"},
    "sampled": {"QUERYLENS_MP_STORAGE": "cache", "QUERYLENS_MP_SAMPLE_RATE": "0.1"},
}
PATH = "/fk_loop/"
REDIS_URL = "redis://127.0.0.1:6379/15"
_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


@dataclass
class Run:
    mode: str
    round: int
    requests_per_second: float
    requests: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    errors: int
    #: CPU time (user + system) the workers spent per request: unlike the
    #: rate, it hardly moves when other programs compete for the CPU.
    cpu_ms_per_request: float


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS_MS[unit]


def workers_cpu_seconds(master: int) -> float:
    """CPU seconds used so far by the worker processes of gunicorn ``master`` (Linux)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # The command may hold spaces; the fields after ")" do not.
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # the process ended meanwhile
        if int(fields[1]) == master:  # ppid
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def parse_wrk(output: str, mode: str, round_: int, cpu_seconds: float) -> Run:
    """The figures of one ``wrk --latency`` report."""
    percentiles = dict(re.findall(r"^\s+(50|90|99)%\s+([\d.]+(?:us|ms|s))\s*$", output, re.M))
    requests = re.search(r"^\s*(\d+) requests in", output, re.M)
    rate = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.M)
    if requests is None or rate is None or len(percentiles) != 3:
        raise RuntimeError(f"unexpected wrk output:\n{output}")
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", output))
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if socket_errors:
        errors += sum(int(n) for n in socket_errors.groups())
    return Run(
        mode=mode,
        round=round_,
        requests_per_second=float(rate.group(1)),
        requests=int(requests.group(1)),
        p50_ms=_ms(percentiles["50"]),
        p90_ms=_ms(percentiles["90"]),
        p99_ms=_ms(percentiles["99"]),
        errors=errors,
        cpu_ms_per_request=cpu_seconds * 1000 / max(int(requests.group(1)), 1),
    )


def wrk(port: int, seconds: int, connections: int) -> str:
    command = [
        "wrk",
        "--latency",
        f"--threads={min(2, connections)}",
        f"--connections={connections}",
        f"--duration={seconds}s",
        "--timeout=10s",
        f"http://127.0.0.1:{port}{PATH}",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, check=True)
    return done.stdout


def delete_keys(prefixes: list[str]) -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    for prefix in prefixes:
        keys = list(client.scan_iter(f"*:{prefix}:*"))
        if keys:
            client.delete(*keys)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per run (10)")
    parser.add_argument("--runs", type=int, default=3, help="runs per mode (3)")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections (16)")
    parser.add_argument(
        "--modes", default=",".join(MODES), help="comma-separated: " + ", ".join(MODES)
    )
    parser.add_argument("--json", type=Path, help="write every run's figures here")
    options = parser.parse_args(argv)
    modes = options.modes.split(",")
    if unknown := set(modes) - set(MODES):
        parser.error(f"unknown modes: {', '.join(sorted(unknown))}")
    if not 1 <= options.duration <= 60 or not 1 <= options.runs <= 10:
        parser.error("keep it bounded: 1-60 s per run, 1-10 runs")
    if shutil.which("wrk") is None:
        parser.error("wrk is not installed (apt-get install wrk)")

    runs: list[Run] = []
    servers: dict[str, Server] = {}
    prefixes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="querylens-loadtest-") as tmp:
        directory = Path(tmp)
        database = prepare_database(directory / "db.sqlite3", authors=4, books_per_author=5)
        try:
            for mode in modes:
                prefix = f"qlload{uuid.uuid4().hex}"
                prefixes.append(prefix)
                environ = {
                    "QUERYLENS_MP_DB": str(database),
                    "QUERYLENS_MP_PREFIX": prefix,
                    "QUERYLENS_MP_REDIS_URL": REDIS_URL,
                    **MODES[mode],
                }
                server = Server(directory / f"{mode}.log", environ)
                servers[mode] = server
                server.start()
                probe = fetch(server.port, PATH)
                if probe.status != 200:
                    raise RuntimeError(f"{mode}: {PATH} answered {probe.status}")
                print(f"{mode:>8}: port {server.port}, {PATH} runs {probe.queries or '?'} queries")
                wrk(server.port, 2, options.connections)  # warm-up, not counted
            for round_ in range(options.runs):
                # Rotate the order so that no mode always goes first.
                shift = round_ % len(modes)
                for mode in modes[shift:] + modes[:shift]:
                    server = servers[mode]
                    assert server.process is not None
                    cpu_before = workers_cpu_seconds(server.process.pid)
                    output = wrk(server.port, options.duration, options.connections)
                    cpu = workers_cpu_seconds(server.process.pid) - cpu_before
                    run = parse_wrk(output, mode, round_, cpu)
                    runs.append(run)
                    print(
                        f"round {round_ + 1} {mode:>8}: {run.requests_per_second:8.1f} req/s  "
                        f"p50 {run.p50_ms:6.2f} ms  p99 {run.p99_ms:7.2f} ms  "
                        f"CPU {run.cpu_ms_per_request:5.2f} ms/request  errors {run.errors}",
                        flush=True,
                    )
        finally:
            for server in servers.values():
                server.stop()
            delete_keys(prefixes)

    print(
        f"\nmedians of {options.runs} runs of {options.duration} s, {options.connections} connections, "
        "gunicorn 4 sync workers:"
    )

    def median(mode: str, field: str) -> float:
        return statistics.median(getattr(r, field) for r in runs if r.mode == mode)

    for mode in modes:
        versus = ""
        if "off" in modes and mode != "off":
            rate = median(mode, "requests_per_second") / median("off", "requests_per_second") - 1
            cpu = median(mode, "cpu_ms_per_request") - median("off", "cpu_ms_per_request")
            versus = f"  vs off: {rate:+.0%} req/s, {cpu:+.2f} ms CPU/request"
        print(
            f"{mode:>8}: {median(mode, 'requests_per_second'):8.1f} req/s  "
            f"p50 {median(mode, 'p50_ms'):6.2f} ms  p99 {median(mode, 'p99_ms'):7.2f} ms  "
            f"CPU {median(mode, 'cpu_ms_per_request'):5.2f} ms/request{versus}"
        )
    if options.json:
        options.json.write_text(json.dumps([asdict(run) for run in runs], indent=2) + "\n")
    return 1 if any(run.errors for run in runs) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
