"""Benchmark variant "querylens-off": installed, but this request is not recorded.

What a request left out by ``SAMPLE_RATE`` (or ``EXCLUDE_PATHS``) costs: the
app and the middleware are there, and every request is sampled out.
"""

from __future__ import annotations

from .settings_bench_querylens import *  # noqa: F403
from .settings_bench_querylens import QUERYLENS

BENCH_VARIANT = "querylens-off"

QUERYLENS = {**QUERYLENS, "SAMPLE_RATE": 0.0}
