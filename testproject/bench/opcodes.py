"""querylens's Python bytecodes per request (a diagnostic of the benchmark).

CPU time on a shared machine moves by 5% between batches of the same code,
and valgrind's instruction counts by about 0.5 M per request between two
builds of it (where things land in memory). The number of bytecodes
querylens's own functions execute moves with neither: this runs a page in a
querylens worker with ``sys.settrace`` opcode events on querylens's frames
only, and prints the bytecodes per request, in all and per function::

    python testproject/bench/opcodes.py --page nplusone
    python testproject/bench/opcodes.py --page queries --alt /tmp/old-checkout

It counts what querylens's Python code does, not what that costs: C work
behind a bytecode (a frame made into an object, a dict grown) and the
garbage collector are in the instruction counts (``instructions.py``) and
the benchmark, not here. Hash seeds are fixed (``PYTHONHASHSEED=0``) so two
runs of one version agree.
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from types import FrameType
from typing import Any

_HERE = Path(__file__).resolve().parent
PROJECT_DIR = _HERE.parent
REPO_ROOT = PROJECT_DIR.parent
WARM_UP = 20


def count(page: str, requests: int, db: str) -> tuple[collections.Counter[str], str]:
    """Bytecodes of querylens's functions over ``requests`` requests of ``page``."""
    from bench.worker import Worker, setup_django

    setup_django("querylens", db)
    import querylens

    package = os.path.join(os.path.dirname(os.path.abspath(querylens.__file__)), "")
    worker = Worker("querylens")
    for _ in range(WARM_UP):
        worker.request(page)
    counts: collections.Counter[str] = collections.Counter()

    def on_opcode(frame: FrameType, event: str, arg: Any) -> Any:
        if event == "opcode":
            code = frame.f_code
            name = getattr(code, "co_qualname", code.co_name)  # 3.11+
            counts[f"{os.path.relpath(code.co_filename, package)}:{name}"] += 1
        return on_opcode

    def on_call(frame: FrameType, event: str, arg: Any) -> Any:
        if not frame.f_code.co_filename.startswith(package):
            return None  # not querylens's: no events for this frame
        frame.f_trace_lines = False
        frame.f_trace_opcodes = True
        return on_opcode

    # A tracer already there (coverage measuring the test suite) is set
    # aside while counting, and put back.
    previous = sys.gettrace()
    sys.settrace(on_call)
    try:
        for _ in range(requests):
            worker.request(page)
    finally:
        sys.settrace(previous)
    return counts, package


def child(page: str, requests: int, db: str, alt: str | None, top: int) -> None:
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
    sys.path[:0] = [str(PROJECT_DIR), str(REPO_ROOT)]
    if alt:
        sys.path.insert(0, alt)  # this querylens, ahead of the checkout's
    counts, package = count(page, requests, db)
    total = sum(counts.values())
    print(f"{page}: {total / requests:,.0f} querylens bytecodes per request ({package})")
    for name, executed in counts.most_common(top):
        print(f"  {executed / requests:>10,.0f}  {name}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--page", default="nplusone", help="light, queries or nplusone")
    parser.add_argument("--requests", type=int, default=10, help="counted requests")
    parser.add_argument("--alt", help="a checkout whose querylens to count instead")
    parser.add_argument("--top", type=int, default=15, help="functions listed")
    parser.add_argument("--db", help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.db is not None:
        child(options.page, options.requests, options.db, options.alt, options.top)
        return
    with tempfile.TemporaryDirectory(prefix="querylens-opcodes-") as folder:
        db = str(Path(folder) / "bench.sqlite3")
        worker = [sys.executable, str(_HERE / "worker.py"), "--variant", "none"]
        subprocess.run([*worker, "--setup", "--db", db], check=True)
        # Dict and set order follow the hash seed: fixed, so runs agree.
        command = [sys.executable, __file__, *(argv or sys.argv[1:]), "--db", db]
        done = subprocess.run(command, env={**os.environ, "PYTHONHASHSEED": "0"}, check=False)
        raise SystemExit(done.returncode)


if __name__ == "__main__":
    main()
