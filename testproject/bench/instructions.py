"""Instructions per request, counted by valgrind (a diagnostic of the benchmark).

CPU time on a shared machine moves by 3 to 5% between runs of the same code,
which is the size of most single changes to querylens's hot path. An
instruction count does not move with the load: this runs each variant's
worker under ``valgrind --tool=callgrind`` twice, with ``--requests`` requests
of a page after 10 untimed ones and with none, and prints the difference per
request. Hash seeds are fixed (``PYTHONHASHSEED=0``) and address-space
randomisation is off (``setarch -R``, where there is one), so two runs of one
version agree to within a few thousand instructions::

    python testproject/bench/instructions.py --variants none,querylens --pages light
    python testproject/bench/instructions.py --variants none,querylens,querylens-alt \
        --alt /tmp/old-checkout

Instructions are not time: memory, caches and the garbage collector's share
show in the benchmark's CPU time and only partly here. The collector is
emptied (``gc.collect()``) before the counted requests, so a full collection,
tens of millions of instructions that come every few hundred requests, does
not fall inside one version's count and not the other's; young-generation
collections, which come every request or few, are counted. ``--no-gc`` turns
the collector off for the counted requests altogether.

Needs valgrind (``apt-get install valgrind``); each count takes a minute or two.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

_HERE = Path(__file__).resolve().parent
PROJECT_DIR = _HERE.parent
REPO_ROOT = PROJECT_DIR.parent
WARM_UP = 10
_COLLECTED = re.compile(r"Collected\s*:\s*(\d+)")


def child(variant: str, page: str, requests: int, db: str, alt: str | None, no_gc: bool) -> None:
    """In the process valgrind runs: set up one variant and make the requests."""
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
    sys.path[:0] = [str(PROJECT_DIR), str(REPO_ROOT)]
    if alt:
        sys.path.insert(0, alt)  # this querylens, ahead of the checkout's
    from bench.worker import Worker, setup_django

    setup_django(variant, db)
    worker = Worker(variant)
    for _ in range(WARM_UP):
        worker.request(page)
    gc.collect()
    if no_gc:
        gc.disable()
    for _ in range(requests):
        worker.request(page)


def count(
    variant: str, page: str, requests: int, db: str, alt: str | None, no_gc: bool = False
) -> int:
    """Instructions of one run of ``child`` under callgrind."""
    command = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        __file__,
        "--child",
        variant,
        page,
        str(requests),
        db,
        "no-gc" if no_gc else "gc",
    ]
    if alt:
        command.append(alt)
    if shutil.which("setarch"):
        command[:0] = ["setarch", platform.machine(), "-R"]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    found = _COLLECTED.search(done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"valgrind failed for {variant} {page}:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def per_request(
    variant: str, page: str, requests: int, db: str, alt: str | None, no_gc: bool = False
) -> float:
    # As in the benchmark, only ``querylens-alt`` imports the other checkout.
    alt = alt if variant == "querylens-alt" else None
    counted = count(variant, page, requests, db, alt, no_gc)
    return (counted - count(variant, page, 0, db, alt, no_gc)) / requests


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        variant, page, requests, db, collector, *alt = argv[1:]
        child(variant, page, int(requests), db, alt[0] if alt else None, collector == "no-gc")
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", default="none,querylens", help="comma-separated")
    parser.add_argument(
        "--pages",
        default="light,queries,nplusone",
        help="comma-separated page names, or paths such as /bench/scale/?n=1",
    )
    parser.add_argument("--requests", type=int, default=20, help="counted requests per run")
    parser.add_argument(
        "--alt", help="a checkout whose querylens the querylens-alt variant imports instead"
    )
    parser.add_argument(
        "--no-gc",
        action="store_true",
        help="collect before the counted requests and turn the collector off for them",
    )
    options = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    with tempfile.TemporaryDirectory(prefix="querylens-instructions-") as folder:
        db = str(Path(folder) / "bench.sqlite3")
        subprocess.run(
            [sys.executable, str(_HERE / "worker.py"), "--variant", "none", "--setup", "--db", db],
            check=True,
        )
        jobs = [
            (variant, page)
            for page in options.pages.split(",")
            for variant in options.variants.split(",")
        ]
        with ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1)) as pool:
            results = pool.map(
                lambda job: per_request(*job, options.requests, db, options.alt, options.no_gc),
                jobs,
            )
            counted = dict(zip(jobs, results, strict=True))
    collector = ", garbage collector off" if options.no_gc else ""
    print(
        f"instructions per request ({options.requests} after {WARM_UP}, minus none of them"
        f"{collector})"
    )
    for (variant, page), instructions in counted.items():
        base = counted.get(("none", page))
        extra = (
            f"  {instructions - base:+,.0f} ({(instructions / base - 1) * 100:+.1f}%)"
            if base and variant != "none"
            else ""
        )
        print(f"{page:24} {variant:16} {instructions:14,.0f}{extra}")


if __name__ == "__main__":
    main()
