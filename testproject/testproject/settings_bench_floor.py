"""Benchmark reference variant "floor": see ``bench.floor``.

querylens and the other tools are not installed; one middleware records
every query (SQL, parameters, duration) and nothing else.
"""

from __future__ import annotations

from .settings_bench import *  # noqa: F403
from .settings_bench import MIDDLEWARE

BENCH_VARIANT = "floor"

# Where querylens's middleware goes: the same queries are recorded.
MIDDLEWARE = [MIDDLEWARE[0], "bench.floor.floor_middleware", *MIDDLEWARE[1:]]
