"""Benchmark variant "silk": django-silk recording every request and query.

Silk keeps what it records in the project's database (its own tables, made
by the worker at start), which is how it is meant to run; its Python
profiler stays off (the default).
"""

from __future__ import annotations

from .settings_bench import *  # noqa: F403
from .settings_bench import INSTALLED_APPS, MIDDLEWARE

BENCH_VARIANT = "silk"

INSTALLED_APPS = [*INSTALLED_APPS, "silk"]
MIDDLEWARE = [MIDDLEWARE[0], "silk.middleware.SilkyMiddleware", *MIDDLEWARE[1:]]
SILKY_PYTHON_PROFILER = False
