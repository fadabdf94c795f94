"""The benchmark command runs end to end (tiny numbers: nothing here is timed).

The command's workers refuse to report unless each variant measures what it
claims: querylens's headers show 100 queries and 1 N+1 where expected, the
toolbar is in the page with its SQL panel's count, and the uninstrumented
worker has neither loaded. So a zero exit status covers those checks too.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
MANAGE = ROOT / "testproject" / "manage.py"


def run_benchmark(*args: str) -> subprocess.CompletedProcess[str]:
    # pytest-django exported the test settings; the command belongs to the demo.
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "testproject.settings"}
    return subprocess.run(
        [sys.executable, str(MANAGE), "querylens_benchmark", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_benchmark_prints_each_variant_and_the_ratios() -> None:
    result = run_benchmark("--rounds", "1", "--requests", "2", "--warmup", "0")

    assert result.returncode == 0, result.stderr
    out = result.stdout
    # One table row per page and variant: median, p25, p75 (ms), ratio vs none.
    rows = re.findall(
        r"^(.{24}) (none|querylens|toolbar) +(\d+\.\d+) +[\d.]+ +[\d.]+ +(\d+\.\d+x)?",
        out,
        re.MULTILINE,
    )
    # One table for wall-clock time, one for CPU time.
    assert [(label.strip(), variant) for label, variant, _, _ in rows] == [
        ("100 queries (100 q)", "none"),
        ("", "querylens"),
        ("", "toolbar"),
        ("100-row N+1 (101 q)", "none"),
        ("", "querylens"),
        ("", "toolbar"),
    ] * 2
    assert all(float(median) > 0 for _, _, median, _ in rows)
    # Ratios vs none on the instrumented rows only.
    assert [bool(ratio) for _, _, _, ratio in rows] == [False, True, True] * 4
    for title in ("100 queries", "100-row N+1"):
        summaries = re.findall(
            rf"^{re.escape(title)}: querylens/none \d+\.\d+x; toolbar/none \d+\.\d+x; "
            r"querylens/toolbar \d+\.\d+x",
            out,
            re.MULTILINE,
        )
        assert len(summaries) == 2
    assert len(re.findall(r"^target querylens/none <= 1\.10x: 100 queries ", out, re.M)) == 2
    assert re.search(r"Django \d+\.\d+.*django-debug-toolbar \d+\.\d+", out)
    assert re.search(r"\d+ CPUs", out)


def test_benchmark_json_reports_the_sanity_checks() -> None:
    result = run_benchmark(
        "--rounds",
        "1",
        "--requests",
        "2",
        "--warmup",
        "0",
        "--pages",
        "nplusone",
        "--json",
    )

    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert list(data["pages"]) == ["nplusone"]
    page = data["pages"]["nplusone"]
    for clock in ("wall", "cpu"):
        figures = page[clock]
        assert set(figures["variants"]) == {"none", "querylens", "toolbar"}
        assert all(stats["n"] == 2 for stats in figures["variants"].values())
        assert all(stats["median_ms"] > 0 for stats in figures["variants"].values())
        assert set(figures["ratios"]) == {
            "querylens/none",
            "toolbar/none",
            "querylens/toolbar",
        }
    checks = data["checks"]
    assert checks["querylens"]["nplusone"]["headers"]["X-QueryLens-NPlusOne"] == "1"
    assert checks["querylens"]["nplusone"]["headers"]["X-QueryLens-Queries"] == "101"
    assert checks["toolbar"]["nplusone"]["toolbar_sql_panel"].startswith("101 queries in")
    assert checks["none"]["nplusone"]["queries"] == 101


def test_the_breakdown_diagnostic_times_every_part_it_names() -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "testproject" / "bench" / "breakdown.py"),
            "--page",
            "nplusone",
            "--requests",
            "3",
            "--warmup",
            "1",
        ],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "testproject.settings"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith("nplusone: 3 requests, 101 queries each")
    # Every part it wraps still exists under its name, and each was called.
    assert "not found (renamed?)" not in out
    for part in ("capture_stack", "relations.origin", "finish_request", "store (", "get_storage"):
        (row,) = [line for line in out.splitlines() if line.strip().startswith(part)]
        assert re.search(r"\s\d+\.\d+\s+\d+\.\d\s", row), row
