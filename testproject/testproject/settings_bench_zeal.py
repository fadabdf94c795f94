"""Benchmark variant "zeal": django-zeal's middleware, as its README sets it up.

``ZEAL_RAISE = False``: an N+1 becomes a warning instead of an exception, so
the page is served as in the other variants.
"""

from __future__ import annotations

from .settings_bench import *  # noqa: F403
from .settings_bench import INSTALLED_APPS, MIDDLEWARE

BENCH_VARIANT = "zeal"

INSTALLED_APPS = [*INSTALLED_APPS, "zeal"]
MIDDLEWARE = [*MIDDLEWARE, "zeal.middleware.zeal_middleware"]
ZEAL_RAISE = False
