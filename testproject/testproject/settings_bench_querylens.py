"""Benchmark variant "querylens": full recording, headers on every response."""

from __future__ import annotations

from .settings_bench import *  # noqa: F403
from .settings_bench import INSTALLED_APPS, MIDDLEWARE

BENCH_VARIANT = "querylens"

INSTALLED_APPS = [*INSTALLED_APPS, "querylens"]
# Right after SecurityMiddleware, as the docs ask: every later middleware's
# queries belong to the record.
MIDDLEWARE = [MIDDLEWARE[0], "querylens.middleware.QueryLensMiddleware", *MIDDLEWARE[1:]]

QUERYLENS = {
    # The most work querylens can be asked to do per request.
    "ENABLED": True,
    "RECORD_PARAMS": True,
    "HEADERS": "always",
    "SAMPLE_RATE": 1.0,
}
