"""Run tests.multiprocess_app under a real gunicorn, for tests and the load test.

Loopback only; every wait is bounded; ``Server.stop()`` belongs in a
``finally``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORKERS = 4
CONCURRENCY = 16


@dataclass
class Reply:
    """What a test needs from one response."""

    status: int
    request_id: str | None
    pid: str | None
    queries: str | None
    duplicates: str | None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def fetch(port: int, path: str) -> Reply:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=15) as response:
            headers = response.headers
            response.read()
            status = response.status
    except urllib.error.HTTPError as error:
        headers, status = error.headers, error.code
    return Reply(
        status=status,
        request_id=headers.get("X-QueryLens-Request"),
        pid=headers.get("X-Worker-Pid"),
        queries=headers.get("X-QueryLens-Queries"),
        duplicates=headers.get("X-QueryLens-Duplicates"),
    )


def fetch_many(port: int, count: int, path: str = "/fk_loop/") -> list[Reply]:
    """``count`` GETs of ``path``, ``CONCURRENCY`` at a time."""
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        return list(pool.map(lambda _: fetch(port, path), range(count)))


def _environ(extra: dict[str, str]) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DJANGO_SETTINGS_MODULE": "tests.multiprocess_settings",
        **extra,
    }


def prepare_database(path: Path, authors: int = 3, books_per_author: int = 2) -> Path:
    """Migrate a new SQLite file at ``path`` and fill it with make_library()."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.multiprocess_app",
            "prepare",
            str(authors),
            str(books_per_author),
        ],
        cwd=ROOT,
        env=_environ({"QUERYLENS_MP_DB": str(path)}),
        check=True,
        timeout=120,
    )
    return path


class Server:
    """gunicorn with four sync workers serving tests.multiprocess_app.

    ``environ`` holds the ``QUERYLENS_MP_*`` variables that
    tests/multiprocess_settings.py reads.
    """

    def __init__(self, log: Path, environ: dict[str, str]) -> None:
        self.port = free_port()
        self.log = log
        self.environ = _environ(environ)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "gunicorn",
                    "tests.multiprocess_app:application",
                    f"--bind=127.0.0.1:{self.port}",
                    f"--workers={WORKERS}",
                    "--worker-class=sync",
                    "--timeout=60",
                    "--graceful-timeout=5",
                    # gunicorn >= 24 listens on a control socket under ~/.gunicorn,
                    # one path for every server on the machine.
                    "--no-control-socket",
                ],
                cwd=ROOT,
                env=self.environ,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        # One worker may serve while the others still load Django; warming
        # up until every worker has answered (on a page querylens does not
        # record) makes ">1 worker" a property of the server, not of luck.
        pids: set[str] = set()
        deadline = time.monotonic() + 60
        while len(pids) < WORKERS:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"gunicorn did not start all workers:\n{self.log_text()}")
            try:
                replies = fetch_many(self.port, 2 * WORKERS, "/no_queries/")
            except OSError:
                time.sleep(0.1)  # not listening yet
            else:
                pids.update(reply.pid or "" for reply in replies)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        # SIGINT: gunicorn's quick shutdown; nothing is left to finish.
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=15)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""
