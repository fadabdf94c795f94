"""Benchmark variant "nplusone": nplusone's Django middleware, logging (not raising)."""

from __future__ import annotations

from .settings_bench import *  # noqa: F403
from .settings_bench import INSTALLED_APPS, MIDDLEWARE

BENCH_VARIANT = "nplusone"

INSTALLED_APPS = [*INSTALLED_APPS, "nplusone.ext.django"]
# Its README puts it first.
MIDDLEWARE = ["nplusone.ext.django.NPlusOneMiddleware", *MIDDLEWARE]
NPLUSONE_RAISE = False
