"""Settings for the multi-process tests and the load test: tests.settings, served by gunicorn.

Everything that varies comes from the environment, set by the process that
starts the server (tests/test_multiprocess.py, tests/loadtest.py):

- ``QUERYLENS_MP_DB``: path of the SQLite file (``python -m tests.multiprocess_app
  prepare`` creates it);
- ``QUERYLENS_MP_REDIS_URL``: the Redis server of the ``"redis"`` cache alias;
- ``QUERYLENS_MP_STORAGE``: ``cache`` (CacheStorage on that alias, the default),
  ``memory`` (MemoryStorage) or ``off`` (querylens not installed at all);
- ``QUERYLENS_MP_PREFIX``, ``QUERYLENS_MP_BUFFER_SIZE``, ``QUERYLENS_MP_SAMPLE_RATE``,
  ``QUERYLENS_MP_HEADERS``: the matching ``QUERYLENS`` keys.
"""

from __future__ import annotations

import os

from tests.settings import *  # noqa: F403
from tests.settings import _TEST_DB_NAME, INSTALLED_APPS, MIDDLEWARE

_environ = os.environ
STORAGE_MODE = _environ.get("QUERYLENS_MP_STORAGE", "cache")

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": _environ.get("QUERYLENS_MP_DB", "multiprocess.sqlite3"),
    }
}
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "redis": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": _environ.get("QUERYLENS_MP_REDIS_URL", "redis://127.0.0.1:6379/15"),
        # The test process reads the buffer through its own "redis" alias.
        "KEY_PREFIX": _TEST_DB_NAME,
        # What docs/staging.rst recommends: a slow or dead Redis costs a
        # request half a second at most, never a hung worker.
        "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
    },
}

QUERYLENS = {
    "STORAGE": "querylens.storage.MemoryStorage"
    if STORAGE_MODE == "memory"
    else "querylens.storage.CacheStorage",
    "CACHE_ALIAS": "redis",
    "CACHE_KEY_PREFIX": _environ.get("QUERYLENS_MP_PREFIX", "querylens-multiprocess"),
    "CACHE_TIMEOUT": 600,
    "BUFFER_SIZE": int(_environ.get("QUERYLENS_MP_BUFFER_SIZE", "200")),
    "SAMPLE_RATE": float(_environ.get("QUERYLENS_MP_SAMPLE_RATE", "1.0")),
    "HEADERS": _environ.get("QUERYLENS_MP_HEADERS", "always"),
    # The warm-up page: it finds the workers without filling the buffer.
    "EXCLUDE_PATHS": [r"^/no_queries/"],
}

_PID_MIDDLEWARE = "tests.multiprocess_app.WorkerPidMiddleware"
if STORAGE_MODE == "off":
    INSTALLED_APPS = [app for app in INSTALLED_APPS if app != "querylens"]
    MIDDLEWARE = [_PID_MIDDLEWARE] + [m for m in MIDDLEWARE if not m.startswith("querylens.")]
else:
    MIDDLEWARE = [_PID_MIDDLEWARE, *MIDDLEWARE]

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"pid": {"format": "pid=%(process)d %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "pid"}},
    "loggers": {"querylens": {"handlers": ["stderr"], "level": "WARNING", "propagate": False}},
}
