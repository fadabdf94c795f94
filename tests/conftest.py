"""Test infrastructure: service markers, headless Chromium, an artifacts folder.

Markers (registered in pyproject.toml):

- ``postgres`` / ``mariadb``: the test uses that database alias;
- ``redis``: the test uses ``settings.QUERYLENS_TEST_REDIS_URL`` or the
  ``"redis"`` cache alias;
- ``browser``: the test drives Chromium through the ``browser``/``page`` fixtures;
- ``sqlite``: the test expects SQLite behind the ``"default"`` alias (plans,
  error texts, query counts of that vendor). Skipped, whatever
  QUERYLENS_REQUIRE_SERVICES says, when QUERYLENS_TEST_DATABASE picks another
  database; prefer a test that holds on every vendor.

tests/settings.py defines an alias only when its server answers; here the tests
that need a missing one are skipped with a reason that ``-ra`` prints. With
QUERYLENS_REQUIRE_SERVICES=1 nothing is skipped, so a missing server is an error.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import pytest_django
from django.conf import settings
from django.db import connections

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

REQUIRE_SERVICES = os.environ.get("QUERYLENS_REQUIRE_SERVICES") == "1"
CHROMIUM = Path("/usr/bin/chromium")
_ESCALATE = "set QUERYLENS_REQUIRE_SERVICES=1 to make this an error"

_failed_key = pytest.StashKey[bool]()
# chromium_problem() result, computed once per run: installing is slow.
_chromium_verdict: list[str | None] = []


def _missing_services() -> dict[str, str]:
    """Marker name -> skip reason, for each service this run has no access to."""
    missing = {}
    if "postgres" not in settings.DATABASES:
        missing["postgres"] = f"PostgreSQL not reachable on 127.0.0.1:5432; {_ESCALATE}"
    if "mariadb" not in settings.DATABASES:
        missing["mariadb"] = f"MariaDB not reachable on 127.0.0.1:3306; {_ESCALATE}"
    if settings.QUERYLENS_TEST_REDIS_URL is None:
        missing["redis"] = f"Redis not reachable on 127.0.0.1:6379; {_ESCALATE}"
    return missing


def chromium_problem(say: Callable[[str], None] = print) -> str | None:
    """Why headless Chromium cannot run here, or None when it can.

    Playwright's own browser download is not reachable from every machine, so
    the tests drive Debian's chromium package; on a root Debian box without it
    we install it once (QUERYLENS_INSTALL_BROWSER=0 prevents that).
    """
    if not _chromium_verdict:
        _chromium_verdict.append(_find_or_install_chromium(say))
    return _chromium_verdict[0]


def _find_or_install_chromium(say: Callable[[str], None]) -> str | None:
    if importlib.util.find_spec("playwright") is None:
        return "playwright is not installed (pip install --group test)"
    if CHROMIUM.exists():
        return None
    if os.environ.get("QUERYLENS_INSTALL_BROWSER") == "0":
        return f"{CHROMIUM} is missing and QUERYLENS_INSTALL_BROWSER=0"
    is_root = hasattr(os, "geteuid") and os.geteuid() == 0
    if not is_root or shutil.which("apt-get") is None:
        return f"{CHROMIUM} is missing; install it with: apt-get install chromium"
    say(f"{CHROMIUM} is missing; installing Debian's chromium package (once)...")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
        result = subprocess.run(command, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
            return f"`{' '.join(command)}` failed: {' / '.join(tail)}"
    if not CHROMIUM.exists():
        return f"apt-get installed chromium but {CHROMIUM} is still missing"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    default_vendor = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
    if default_vendor != "sqlite3":
        # Not a missing service: this run chose another default database.
        reason = f"expects SQLite as the default database, this run uses {default_vendor}"
        for item in items:
            if item.get_closest_marker("sqlite"):
                item.add_marker(pytest.mark.skip(reason=reason))
    if REQUIRE_SERVICES:
        return
    missing = _missing_services()
    if any(item.get_closest_marker("browser") for item in items):
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        say = reporter.write_line if reporter is not None else print
        problem = chromium_problem(say)
        if problem is not None:
            missing["browser"] = f"headless Chromium unavailable: {problem}"
    for item in items:
        for marker, reason in missing.items():
            if item.get_closest_marker(marker):
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    # The page fixture reads this to keep a screenshot of a failed test.
    if report.when == "call" and report.failed:
        item.stash[_failed_key] = True
    return report


@pytest.fixture(scope="session")
def artifacts_dir(pytestconfig: pytest.Config) -> Path:
    """``test-artifacts/`` at the repository root (git-ignored), created."""
    path = pytestconfig.rootpath / "test-artifacts"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="session")
def django_db_setup(
    django_db_setup: None, django_db_blocker: pytest_django.DjangoDbBlocker
) -> Iterator[None]:
    """pytest-django's database setup, closing every connection before teardown.

    With QUERYLENS_TEST_DATABASE=postgres, "default" and "postgres" share one
    test database; PostgreSQL refuses to drop it while the second alias still
    holds a connection.
    """
    yield
    with django_db_blocker.unblock():
        connections.close_all()


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[Browser]:
    """A headless Chromium, started for this test only.

    Playwright's sync API keeps an asyncio loop running in the main thread
    until it stops. Shared across tests, that loop would break every later
    async test and make Django refuse ORM calls, so each test gets its own.
    """
    problem = chromium_problem()
    if problem is not None:
        message = f"headless Chromium unavailable: {problem}"
        if REQUIRE_SERVICES:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    # While that loop runs, Django would take the test's own ORM calls (setup
    # data, assertions) for calls from async code; they are not.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        # --no-sandbox: Chromium refuses to start its sandbox as root.
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Browser, artifacts_dir: Path, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A fresh browser context and page; a failed test leaves a screenshot."""
    context = browser.new_context()
    tab = context.new_page()
    try:
        yield tab
        if request.node.stash.get(_failed_key, False):
            name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid)
            tab.screenshot(path=artifacts_dir / f"{name}.png", full_page=True)
    finally:
        context.close()


@pytest.fixture(autouse=True)
def _empty_querylens_buffer() -> Iterator[None]:
    """Each test starts with an empty ring buffer."""
    from querylens.storage import get_storage, reset_storage

    reset_storage()
    yield
    with contextlib.suppress(Exception):
        get_storage().clear()
    reset_storage()


@pytest.fixture
def library(db: None) -> list[object]:
    """Three authors with two books each (six books), tags, profiles, comments."""
    from tests.factories import make_library

    return make_library()


@pytest.fixture(autouse=True)
def _close_worker_thread_connections() -> Iterator[None]:
    """Close connections that async code opened in asgiref's worker thread.

    Left open, they keep PostgreSQL from dropping the test database.
    """
    yield
    from asgiref.sync import SyncToAsync
    from django.db import connections

    SyncToAsync.single_thread_executor.submit(connections.close_all).result(timeout=10)
