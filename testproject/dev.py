#!/usr/bin/env python3
"""One entry point for working on querylens; needs only Python >= 3.10.

    python3 testproject/dev.py demo [ADDR:PORT]   # demo site on 127.0.0.1:8000
    python3 testproject/dev.py test [PYTEST ARGS] # whole suite + branch coverage
    python3 testproject/dev.py bench [ARGS]       # manage.py querylens_benchmark
    python3 testproject/dev.py docs               # Sphinx, warnings are errors
    python3 testproject/dev.py lint               # ruff check and format --check, mypy
    python3 testproject/dev.py dist               # build sdist + wheel into dist/, twine check

Every command first makes sure `.venv/` at the repository root exists and holds
querylens (editable, with the toolbar extra) and the dependency groups the
command needs. An existing `.venv` is reused, never deleted; the install is
skipped while pyproject.toml is unchanged since the last one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MIN_PYTHON = (3, 10)
ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
VENV_PYTHON = VENV / "bin" / "python"
STAMP = VENV / ".querylens-dev.json"
MANAGE = ROOT / "testproject" / "manage.py"
DEMO_SETTINGS = "testproject.settings"
# `--group` needs pip 25.1.
MIN_PIP = (25, 1)
GROUPS_FOR = {
    "demo": ["test"],
    "test": ["test"],
    "bench": ["test"],
    "docs": ["docs"],
    "lint": ["test", "lint"],  # mypy's Django plugin loads tests.settings and its apps
    "dist": ["release"],
}
#: How often a long, quiet install says it is still working (seconds).
PROGRESS_EVERY = 15


def say(message: str) -> None:
    print(f"dev.py: {message}", flush=True)


def fail(message: str, status: int = 2) -> None:
    print(f"dev.py: error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(status)


def run(*args: str | Path, check: bool = True) -> int:
    command = [str(arg) for arg in args]
    status = subprocess.call(command, cwd=ROOT)
    if check and status != 0:
        fail(f"`{' '.join(command)}` exited with status {status}", status)
    return status


def run_quietly(what: str, *args: str | Path) -> None:
    """Run an installer with its output kept aside: shown only if it fails.

    pip and the build backend print pages of notices (including setuptools'
    boxed warning about editable installs) that are not this project's; a
    line every PROGRESS_EVERY seconds says the install is still going.
    """
    command = [str(arg) for arg in args]
    started = time.monotonic()
    with tempfile.TemporaryFile(mode="w+") as log:
        process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        while True:
            try:
                status = process.wait(timeout=PROGRESS_EVERY)
                break
            except subprocess.TimeoutExpired:
                say(f"  ... still {what} ({time.monotonic() - started:.0f} s)")
        if status != 0:
            log.seek(0)
            sys.stderr.write(log.read())
            fail(f"{what} failed: `{' '.join(command)}` exited with status {status}", status)
    say(f"  done in {time.monotonic() - started:.0f} s")


def ensure_python() -> None:
    if sys.version_info >= MIN_PYTHON:
        return
    wanted = ".".join(map(str, MIN_PYTHON))
    found = sys.version.split()[0]
    # A newer interpreter is often installed next to an old default python3.
    for minor in range(14, MIN_PYTHON[1] - 1, -1):
        candidate = shutil.which(f"python3.{minor}")
        # A pyenv shim exists on PATH even when its version is not active.
        if candidate and _runs(candidate):
            say(f"Python {found} is too old (need >= {wanted}); using {candidate}")
            os.execv(candidate, [candidate, __file__, *sys.argv[1:]])
    fail(
        f"querylens needs Python >= {wanted}, but this is Python {found} "
        f"({sys.executable}) and no python3.10 to python3.14 is on PATH. Install "
        f"one and run e.g.: python3.12 {Path(__file__).relative_to(ROOT)} " + " ".join(sys.argv[1:])
    )


def _runs(python: str) -> bool:
    try:
        subprocess.run([python, "-c", "pass"], check=True, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return True


def venv_version() -> tuple[int, int] | None:
    try:
        out = subprocess.check_output(
            [str(VENV_PYTHON), "-c", "import sys; print(*sys.version_info[:2])"],
            text=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    major, minor = out.split()
    return int(major), int(minor)


def ensure_venv() -> None:
    if VENV_PYTHON.exists():
        version = venv_version()
        if version is None:
            fail(f"{VENV_PYTHON} exists but does not run; repair or remove {VENV}")
        if version < MIN_PYTHON:
            fail(
                f"{VENV} uses Python {version[0]}.{version[1]}; querylens needs "
                f">= {MIN_PYTHON[0]}.{MIN_PYTHON[1]}. Move {VENV} away and rerun."
            )
        return
    # Also covers a half-made .venv: `venv` fills in what is missing, keeps the rest.
    say(f"creating virtualenv {VENV} with {sys.executable}")
    status = subprocess.call([sys.executable, "-m", "venv", str(VENV)])
    if status != 0 or not VENV_PYTHON.exists():
        fail(
            "could not create the virtualenv; on Debian/Ubuntu install the "
            "python3-venv package (apt-get install python3-venv) and rerun"
        )


def pip_version() -> tuple[int, ...]:
    out = subprocess.check_output(
        [str(VENV_PYTHON), "-c", "import pip; print(pip.__version__)"], text=True
    )
    return tuple(int(part) for part in out.strip().split(".")[:2] if part.isdigit())


def ensure_installed(groups: list[str]) -> None:
    """Install querylens and `groups` into the venv unless already done."""
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    try:
        stamp = json.loads(STAMP.read_text())
    except (OSError, ValueError):
        stamp = {}
    # Only groups this dev.py still knows: one removed from pyproject.toml
    # would make pip refuse the whole install.
    known = {group for needed in GROUPS_FOR.values() for group in needed}
    previous = set(stamp.get("groups", [])) & known
    done = previous if stamp.get("pyproject") == digest else set()
    if set(groups) <= done:
        return
    if not done:
        say("upgrading pip")
        run_quietly("upgrading pip", VENV_PYTHON, "-m", "pip", "install", "--upgrade", "pip")
        if pip_version() < MIN_PIP:
            fail(
                "pip >= 25.1 is needed for dependency groups; "
                f"upgrade it with: {VENV_PYTHON} -m pip install --upgrade pip"
            )
    # Keep earlier groups current too: one venv serves every command.
    wanted = sorted(set(groups) | previous)
    say(
        f"installing querylens (editable, with the toolbar extra) and the {', '.join(wanted)} "
        "dependencies into .venv; the first time takes a minute or two"
    )
    group_args = [arg for group in wanted for arg in ("--group", group)]
    run_quietly("installing", VENV_PYTHON, "-m", "pip", "install", "-e", ".[toolbar]", *group_args)
    STAMP.write_text(json.dumps({"pyproject": digest, "groups": wanted}) + "\n")


def manage(*args: str, check: bool = True) -> int:
    return run(VENV_PYTHON, MANAGE, *args, check=check)


def cmd_demo(args: list[str]) -> None:
    if not MANAGE.exists():
        fail(f"{MANAGE} is missing; the demo project is not there yet")
    addrport = args[0] if args else "127.0.0.1:8000"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", DEMO_SETTINGS)
    say("migrating the demo database (testproject/db.sqlite3)")
    manage("migrate", "--noinput")
    say("seeding demo data (safe to repeat)")
    manage("seed_demo")
    say("making sure the demo superuser exists")
    manage(
        "shell",
        "--no-imports",
        "-c",
        "from django.contrib.auth import get_user_model\n"
        "User = get_user_model()\n"
        "if not User.objects.filter(username='admin').exists():\n"
        "    User.objects.create_superuser('admin', 'admin@example.com', 'admin')\n",
    )
    base = f"http://{addrport}"
    print(
        f"""
  querylens demo (DEMO ONLY: the superuser is admin / admin)

    shop pages          {base}/
    querylens hotspots  {base}/admin/querylens/   (log in as admin / admin)
    Django admin        {base}/admin/
    headers             curl -sI {base}/books/   (an N+1: 41 queries)

  Ctrl-C stops the server.
""",
        flush=True,
    )
    # exec so Ctrl-C and the exit status belong to runserver itself.
    os.chdir(ROOT)
    os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), str(MANAGE), "runserver", addrport])


def cmd_test(args: list[str]) -> None:
    coverage = [str(VENV_PYTHON), "-m", "coverage"]
    run(*coverage, "erase")
    say(f"running pytest under coverage: pytest {' '.join(args)}".rstrip())
    status = run(*coverage, "run", "-m", "pytest", *args, check=False)
    # pyproject.toml measures subprocesses, which writes one data file each.
    run(*coverage, "combine", "--quiet", check=False)
    run(*coverage, "report", check=False)
    if status == 5:
        say("pytest collected no tests (exit status 5)")
    elif status != 0:
        say(f"pytest failed with exit status {status}")
    raise SystemExit(status)


def cmd_bench(args: list[str]) -> None:
    say("running manage.py querylens_benchmark " + " ".join(args))
    raise SystemExit(manage("querylens_benchmark", *args, check=False))


def cmd_docs(args: list[str]) -> None:
    out = ROOT / "docs" / "_build" / "html"
    say(f"building the docs into {out.relative_to(ROOT)}")
    run(VENV_PYTHON, "-m", "sphinx", "-W", "-b", "html", "docs", out, *args)
    say(f"open {out / 'index.html'}")


def cmd_lint(args: list[str]) -> None:
    say("ruff check")
    ruff = run(VENV_PYTHON, "-m", "ruff", "check", *(args or ["."]), check=False)
    # Every step runs even when one fails, so one pass shows every problem.
    say("ruff format --check")
    formatted = run(VENV_PYTHON, "-m", "ruff", "format", "--check", *(args or ["."]), check=False)
    say("mypy (strict on the querylens package)")
    mypy = run(VENV_PYTHON, "-m", "mypy", check=False)
    raise SystemExit(ruff or formatted or mypy)


def cmd_dist(args: list[str]) -> None:
    out = ROOT / "dist"
    say(f"building the sdist and the wheel into {out.relative_to(ROOT)}")
    for old in out.glob("querylens_profiler-*"):
        old.unlink()
    run(VENV_PYTHON, "-m", "build", "--outdir", out, *args)
    say("twine check")
    run(VENV_PYTHON, "-m", "twine", "check", "--strict", *sorted(out.glob("querylens_profiler-*")))


COMMANDS = {
    "demo": cmd_demo,
    "test": cmd_test,
    "bench": cmd_bench,
    "docs": cmd_docs,
    "lint": cmd_lint,
    "dist": cmd_dist,
}


def main(argv: list[str]) -> None:
    if not argv or argv[0] not in COMMANDS:
        print(__doc__.strip(), file=sys.stderr)
        raise SystemExit(0 if argv[:1] in (["-h"], ["--help"]) else 2)
    ensure_python()
    command, args = argv[0], argv[1:]
    ensure_venv()
    try:
        ensure_installed(GROUPS_FOR[command])
        COMMANDS[command](args)
    except KeyboardInterrupt:
        raise SystemExit(130) from None


if __name__ == "__main__":
    main(sys.argv[1:])
