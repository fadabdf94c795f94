"""Benchmark reference variant "floor-callsite": see ``bench.floor``.

querylens and the other tools are not installed; one middleware records
every query and its call site (one frame of the project's code), nothing
else.
"""

from __future__ import annotations

from .settings_bench import *  # noqa: F403
from .settings_bench import MIDDLEWARE

BENCH_VARIANT = "floor-callsite"

# Where querylens's middleware goes: the same queries are recorded.
MIDDLEWARE = [MIDDLEWARE[0], "bench.floor.floor_callsite_middleware", *MIDDLEWARE[1:]]
