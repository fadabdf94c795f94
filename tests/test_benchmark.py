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
from typing import Any

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
MANAGE = ROOT / "testproject" / "manage.py"


def run_quick_benchmark(*args: str, requests: int = 2) -> subprocess.CompletedProcess[str]:
    """One round, ``requests`` per batch, no warm-up: the plumbing, not the figures."""
    return run_benchmark("--rounds", "1", "--requests", str(requests), "--warmup", "0", *args)


def n_plus_one_page_json(variants: str) -> dict[str, Any]:
    """A quick run of the N+1 page alone, without the scaling tables, as JSON."""
    result = run_quick_benchmark(
        "--pages", "nplusone", "--variants", variants, "--scaling-rounds", "0", "--json"
    )
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


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
    result = run_quick_benchmark(
        "--variants",
        "none,querylens,querylens-off,toolbar",
        "--scaling-rounds",
        "1",
        "--memory-requests",
        "6",
    )

    assert result.returncode == 0, result.stderr
    out = result.stdout
    # One table row per page and variant: median, p25, p75 (ms), ratio vs none.
    rows = re.findall(
        r"^(.{24}) (none|querylens|querylens-off|toolbar) +(\d+\.\d+) +[\d.]+ +[\d.]+ +(\d+\.\d+x)?",
        out,
        re.MULTILINE,
    )
    # One table for wall-clock time, one for CPU time.
    assert [(label.strip(), variant) for label, variant, _, _ in rows] == [
        ("light page (5 q)", "none"),
        ("", "querylens"),
        ("", "querylens-off"),
        ("", "toolbar"),
        ("100 queries (100 q)", "none"),
        ("", "querylens"),
        ("", "querylens-off"),
        ("", "toolbar"),
        ("100-row N+1 (101 q)", "none"),
        ("", "querylens"),
        ("", "querylens-off"),
        ("", "toolbar"),
    ] * 2
    assert all(float(median) > 0 for _, _, median, _ in rows)
    # Ratios vs none on the instrumented rows only.
    assert [bool(ratio) for _, _, _, ratio in rows] == [False, True, True, True] * 6
    for title in ("light page", "100 queries", "100-row N+1"):
        summaries = re.findall(
            rf"^{re.escape(title)}: querylens/none \d+\.\d+x; querylens-off/none \d+\.\d+x; "
            r"toolbar/none \d+\.\d+x; querylens/toolbar \d+\.\d+x",
            out,
            re.MULTILINE,
        )
        assert len(summaries) == 2
        assert (
            len(re.findall(rf"^{re.escape(title)}: not recorded \(sampled out\) ", out, re.M)) == 2
        )
    assert len(re.findall(r"^target querylens/none <= 1\.05x: light page ", out, re.M)) == 2
    assert re.search(r"Django \d+\.\d+.*django-debug-toolbar \d+\.\d+", out)
    assert re.search(r"\d+ CPUs", out)
    # How the cost scales: one row per size and depth, with microseconds per query.
    scaling = re.findall(r"^(\S.*?) +\d+\.\d+ +\d+\.\d+ +\d+\.\d+x .* -?\d+\.\d+$", out, re.M)
    assert [title.strip() for title in scaling if title.startswith(("1", "10"))] == [
        "1 query",
        "10 queries",
        "100 queries",
        "1,000 queries",
        "10,000 queries (cap 1,000)",
        "100 queries, stack 30",
        "100 queries, stack 100",
        "100 queries, stack 300",
    ]
    record = re.search(r"^one buffered record of the 100-query page: ([\d,]+) bytes", out, re.M)
    assert record is not None
    assert int(record.group(1).replace(",", "")) > 1000
    assert re.search(r"^module caches \(entries/bound\): code objects [\d,]+/100,000", out, re.M)
    for variant in ("none", "querylens", "querylens-off"):
        assert re.search(
            rf"^resident memory, {variant}: [\d.]+ MB .* after 6 more requests", out, re.M
        )


def test_benchmark_json_reports_the_sanity_checks() -> None:
    data = n_plus_one_page_json("none,querylens,toolbar")
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
    assert data["scaling"] is None
    assert data["memory"]["record"]["bytes_per_record"] > 1000


def test_the_floor_variants_record_every_query_and_price_querylens_against_them() -> None:
    data = n_plus_one_page_json("none,querylens,floor,floor-callsite")
    checks = data["checks"]
    # Each saw the page's 101 queries; the call-site walk found the view's
    # line (the template's lazy loads are rendered from it), querylens's
    # headers were not sent by either.
    assert checks["floor"]["nplusone"]["queries_seen"] == "101"
    assert checks["floor-callsite"]["nplusone"]["queries_seen"] == "101"
    assert re.fullmatch(r"views\.py:\d+", checks["floor-callsite"]["nplusone"]["callsite"])
    assert "headers" not in checks["floor"]["nplusone"]
    ratios = data["pages"]["nplusone"]["cpu"]["ratios"]
    assert {
        "floor/none",
        "floor-callsite/none",
        "querylens/floor",
        "querylens/floor-callsite",
    } <= set(ratios)
    assert ratios["querylens/floor"] == pytest.approx(
        ratios["querylens/none"] / ratios["floor/none"]
    )


def test_the_other_tools_are_measured_and_each_is_seen_at_work() -> None:
    import django

    data = n_plus_one_page_json("none,querylens,zeal,nplusone,silk")
    checks = data["checks"]
    # Each tool proves it saw the loop, its own way.
    assert "N+1" in checks["zeal"]["detects"]
    assert checks["silk"]["detects"] == "saved the request and its 101 queries"
    ratios = data["pages"]["nplusone"]["cpu"]["ratios"]
    assert {"querylens/zeal", "querylens/silk", "zeal/none", "silk/none"} <= set(ratios)
    if django.VERSION < (6, 1):
        assert "n+1" in checks["nplusone"]["detects"].lower()
        assert "querylens/nplusone" in ratios
    else:
        # nplusone does not run on Django 6.1: reported, not measured.
        assert "nplusone" in data["options"]["unavailable"]
        assert "querylens/nplusone" not in ratios


def test_the_admin_pages_are_timed_with_full_buffers() -> None:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "testproject.settings",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "testproject"), str(ROOT)]),
        "QUERYLENS_RENDER_SIZES": "3x10,5x40",
    }
    result = subprocess.run(
        [sys.executable, "-m", "bench.render"],
        cwd=ROOT / "testproject",
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout.strip().splitlines()[-1])["rows"]
    assert [(row["records"], row["queries"]) for row in rows] == [(3, 10), (5, 40)]
    for row in rows:
        # Each page answered 200 (checked by the script) and took some time.
        assert all(row[key] > 0 for key in ("hotspots_ms", "hotspots_json_ms", "requests_ms"))
        assert row["request_ms"] > 0


def test_the_load_test_runs_from_the_benchmark() -> None:
    import shutil

    result = run_quick_benchmark(
        "--pages",
        "light",
        "--variants",
        "none,querylens",
        "--scaling-rounds",
        "0",
        "--load",
        "1",
        requests=1,
    )
    assert result.returncode == 0, result.stderr
    if shutil.which("wrk") is None:
        assert "load test: skipped (wrk is not installed" in result.stdout
        return
    assert "load test: gunicorn with 4 sync workers" in result.stdout
    for mode in ("off", "memory", "cache", "sampled"):
        line = re.search(rf"^  {mode} +([\d.]+) requests/s, .* (\d+) errors$", result.stdout, re.M)
        assert line is not None, result.stdout
        assert float(line.group(1)) > 0
        assert line.group(2) == "0"


def bench_script(script: str, *args: str) -> str:
    """What ``testproject/bench/<script>`` prints; it must exit 0."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "testproject" / "bench" / script), *args],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "testproject.settings"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_breakdown_diagnostic_times_every_part_it_names() -> None:
    out = bench_script("breakdown.py", "--page", "nplusone", "--requests", "3", "--warmup", "1")
    assert out.startswith("nplusone: 3 requests, 101 queries each")
    # Every part it wraps still exists under its name, and each was called.
    assert "not found (renamed?)" not in out
    for part in ("capture_stack", "relations.origin", "finish_request", "store (", "get_storage"):
        (row,) = [line for line in out.splitlines() if line.strip().startswith(part)]
        assert re.search(r"\s\d+\.\d+\s+\d+\.\d\s", row), row


def test_the_opcode_count_names_querylens_functions_and_agrees_with_itself() -> None:
    def count() -> str:
        return bench_script("opcodes.py", "--page", "nplusone", "--requests", "2", "--top", "40")

    out = count()
    total = re.match(r"nplusone: ([\d,]+) querylens bytecodes per request", out)
    assert total is not None, out
    assert int(total.group(1).replace(",", "")) > 101 * 100
    # The per-query walk and the relation hooks of the page's lazy loads.
    listed = {line.split()[-1] for line in out.splitlines()[1:]}
    assert {"capture.py:capture_stack", "relations.py:origin"} <= listed
    # Fixed hash seed, fixed work: a second run counts the same.
    assert count() == out
