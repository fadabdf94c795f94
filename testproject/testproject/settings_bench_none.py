"""Benchmark variant "none": no instrumentation at all.

querylens is not installed (no app, so no execute wrapper and no relation
hooks; no middleware) and neither is the toolbar.
"""

from __future__ import annotations

from .settings_bench import *  # noqa: F403

BENCH_VARIANT = "none"
