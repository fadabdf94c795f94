"""Benchmark variant "toolbar": django-debug-toolbar with its SQL panel only.

Only the SQL panel is enabled: it is the part of the toolbar that does what
querylens does, and every other panel would only add cost to the toolbar's
side of the comparison.
"""

from __future__ import annotations

from .settings_bench import *  # noqa: F403
from .settings_bench import INSTALLED_APPS, MIDDLEWARE

BENCH_VARIANT = "toolbar"

INSTALLED_APPS = [*INSTALLED_APPS, "debug_toolbar"]
# Where the toolbar's docs put it: as early as possible, after middleware that
# encodes the response (none here).
MIDDLEWARE = [MIDDLEWARE[0], "debug_toolbar.middleware.DebugToolbarMiddleware", *MIDDLEWARE[1:]]

DEBUG_TOOLBAR_PANELS = ["debug_toolbar.panels.sql.SQLPanel"]
DEBUG_TOOLBAR_CONFIG = {
    # Shown on every response, whatever DEBUG and REMOTE_ADDR say.
    "SHOW_TOOLBAR_CALLBACK": "bench.views.always",
    # The benchmark's test runs under pytest; the workers are not tests.
    "IS_RUNNING_TESTS": False,
}
