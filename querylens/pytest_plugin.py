"""The pytest plugin: ``pytest --querylens`` fails a test that runs a new N+1.

Installed with querylens (the ``pytest11`` entry point), it does nothing
without ``--querylens`` but register its options, its marker and the
``querylens`` fixture. With it, the call phase of every test is recorded
(test client requests, ORM calls in the test body, async tests), analysed as
the middleware would, and a test fails when it runs an N+1 group that is
neither in the baseline file nor allowed.

The baseline (``--querylens-baseline``, default ``querylens-baseline.json``
in the rootdir) lists known groups keyed by test id, relation, fingerprint,
call-site file and function, without line numbers, so moving code does not
break it. ``--querylens-update-baseline`` rewrites it from the run; CI never
does. Under pytest-xdist each worker sends what it saw to the controller,
which prints the summary and writes the file.
"""

from __future__ import annotations

import json
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

BASELINE_NAME = "querylens-baseline.json"
BASELINE_VERSION = 1
_STASH = "querylens"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("querylens", "querylens: N+1 detection")
    group.addoption(
        "--querylens",
        action="store_true",
        default=False,
        help="Record every test and fail those running an N+1 that is neither in the "
        "baseline nor allowed.",
    )
    group.addoption(
        "--querylens-baseline",
        default=None,
        metavar="PATH",
        help=f"Known N+1 groups (default: {BASELINE_NAME} in the rootdir; missing file = "
        "none tolerated).",
    )
    group.addoption(
        "--querylens-update-baseline",
        action="store_true",
        default=False,
        help="Rewrite the baseline from this run instead of failing (implies --querylens).",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "querylens(threshold=None, allow=None): this test's N+1 threshold, and allow "
        "entries ({relation?, callsite?, fingerprint?, reason}) for it alone.",
    )
    if config.getoption("querylens") or config.getoption("querylens_update_baseline"):
        config.pluginmanager.register(Session(config), "querylens-session")


# --- the fixture, with or without --querylens --------------------------------------------


class TestRecording:
    """What the ``querylens`` fixture gives: the test's queries, analysed on demand."""

    def __init__(self, name: str) -> None:
        from querylens import lifecycle

        self.name = name
        self._recording = lifecycle.start()

    @property
    def record(self) -> Any:
        """The ``RequestRecord`` of what the test ran so far."""
        from querylens import lifecycle

        return lifecycle.finish(self._recording, path=self.name, reuse=False)

    def _stop(self) -> None:
        from querylens import lifecycle

        lifecycle.stop(self._recording)


@pytest.fixture
def querylens(request: pytest.FixtureRequest) -> Iterator[TestRecording]:
    """The test's queries: ``querylens.record`` is their analysis so far."""
    recording = TestRecording(request.node.nodeid)
    try:
        yield recording
    finally:
        recording._stop()


# --- the session under --querylens ---------------------------------------------------------


def _key(entry: dict[str, Any]) -> tuple[str, str, str, str, str]:
    return (
        str(entry["test"]),
        str(entry.get("file") or ""),
        str(entry.get("function") or ""),
        str(entry.get("relation") or ""),
        str(entry["fingerprint"]),
    )


def _entry(test: str, group: Any) -> dict[str, Any]:
    site = group.callsite
    return {
        "test": test,
        "relation": group.relation,
        "fingerprint": group.fingerprint,
        "file": site.file if site is not None else None,
        "function": site.function if site is not None else None,
        "count": group.count,
        "sample": " ".join(group.sample_sql.split())[:200],
    }


def _describe(entry: dict[str, Any]) -> str:
    where = f"{entry.get('file')}:{entry.get('function')}" if entry.get("file") else "unknown"
    return f"{entry['test']}: {entry.get('relation') or 'no relation'} at {where}"


@dataclass
class Outcome:
    """What one process saw; workers send theirs to the controller."""

    tests: set[str] = field(default_factory=set)
    seen: dict[tuple[str, ...], dict[str, Any]] = field(default_factory=dict)
    new: list[dict[str, Any]] = field(default_factory=list)
    known: int = 0
    allows_used: set[str] = field(default_factory=set)

    def to_json(self) -> str:
        return json.dumps(
            {
                "tests": sorted(self.tests),
                "seen": list(self.seen.values()),
                "new": self.new,
                "known": self.known,
                "allows_used": sorted(self.allows_used),
            }
        )

    def merge(self, text: str) -> None:
        data = json.loads(text)
        self.tests.update(data["tests"])
        for entry in data["seen"]:
            self.seen[_key(entry)] = entry
        self.new.extend(data["new"])
        self.known += int(data["known"])
        self.allows_used.update(data["allows_used"])


class Session:
    """Records each test's call phase and keeps the books for the summary."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.update = bool(config.getoption("querylens_update_baseline"))
        option = config.getoption("querylens_baseline")
        self.path = Path(option) if option else config.rootpath / BASELINE_NAME
        self.baseline = self._load()
        self.outcome = Outcome()
        self.worker = hasattr(config, "workerinput")

    def _load(self) -> dict[tuple[str, ...], dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}  # no baseline: no N+1 tolerated
        except (OSError, ValueError) as exc:
            raise pytest.UsageError(f"querylens: cannot read {self.path}: {exc}") from exc
        entries = data.get("groups", []) if isinstance(data, dict) else []
        return {_key(entry): entry for entry in entries}

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Generator[None, Any, Any]:
        from querylens import allow, lifecycle
        from querylens.testing import n_plus_one_message

        marker = item.get_closest_marker("querylens")
        threshold = marker.kwargs.get("threshold") if marker else None
        marker_rules = allow.rules(marker.kwargs.get("allow")) if marker else []
        configured = allow.configured()
        recording = lifecycle.start()
        try:
            result = yield
        finally:
            lifecycle.stop(recording)
        record = lifecycle.finish(
            recording,
            path=item.nodeid,
            threshold=threshold,
            reuse=False,
            allow=[*configured, *marker_rules],
        )
        test = item.nodeid
        self.outcome.tests.add(test)
        new = []
        for group in record.n_plus_one:
            if group.allowed is not None:
                for rule in configured:
                    if rule.matches(group):
                        self.outcome.allows_used.add(f"{rule.describe()} ({rule.reason})")
                        break
                continue
            entry = _entry(test, group)
            self.outcome.seen[_key(entry)] = entry
            if _key(entry) in self.baseline:
                self.outcome.known += 1
            else:
                self.outcome.new.append(entry)
                new.append(group)
        if new and not self.update:
            raise AssertionError(
                n_plus_one_message(new) + "\n(querylens: not in the baseline "
                f"{self.path.name}; fix it, allow it with a reason, or refresh the baseline "
                "with --querylens-update-baseline)"
            )
        return result

    # -- pytest-xdist ---------------------------------------------------------------

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.worker:
            self.config.workeroutput[_STASH] = self.outcome.to_json()  # type: ignore[attr-defined]
        elif self.update:
            self._write()

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        text = getattr(node, "workeroutput", {}).get(_STASH)
        if text:
            self.outcome.merge(text)

    # -- the summary and the file -------------------------------------------------------

    def _stale(self) -> list[dict[str, Any]]:
        """Baseline entries of tests that ran but no longer produce their group."""
        return [
            entry
            for key, entry in sorted(self.baseline.items())
            if entry["test"] in self.outcome.tests and key not in self.outcome.seen
        ]

    def _unused_allows(self) -> list[str]:
        from querylens import allow

        described = [f"{rule.describe()} ({rule.reason})" for rule in allow.configured()]
        return [text for text in described if text not in self.outcome.allows_used]

    def _write(self) -> None:
        # Entries of tests that did not run this time are kept as they were.
        kept = {
            key: entry
            for key, entry in self.baseline.items()
            if entry["test"] not in self.outcome.tests
        }
        kept.update(self.outcome.seen)
        groups = [kept[key] for key in sorted(kept)]
        document = {
            "version": BASELINE_VERSION,
            "about": "Known N+1 groups, one per test, relation and call site. Refresh with "
            "pytest --querylens --querylens-update-baseline; only ever shrink it by hand.",
            "groups": groups,
        }
        self.path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.worker:
            return
        outcome = self.outcome
        stale = self._stale()
        write = terminalreporter.write_line
        terminalreporter.section("querylens")
        if self.update:
            write(
                f"baseline {self.path} rewritten: {len(outcome.seen)} group(s) seen in this "
                f"run, {len(stale)} stale entr{'y' if len(stale) == 1 else 'ies'} removed"
            )
        else:
            write(
                f"{len(outcome.new)} new N+1 group(s) (failed), {outcome.known} known "
                f"(in {self.path.name}), {len(stale)} stale baseline "
                f"entr{'y' if len(stale) == 1 else 'ies'}"
            )
            for entry in outcome.new:
                write(f"  new: {_describe(entry)}")
            for entry in stale:
                write(f"  stale: {_describe(entry)}")
            if outcome.new or stale:
                write("  refresh the baseline with: pytest --querylens --querylens-update-baseline")
        for text in self._unused_allows():
            write(f"  stale allow entry (matched nothing in this run): {text}")
