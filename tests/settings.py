"""Settings for querylens's own test suite.

SQLite always works. PostgreSQL, MariaDB and Redis on loopback get an alias
only when they answer, so a laptop without them still runs the suite (the
tests that need them are skipped with a reason, see conftest.py). With
QUERYLENS_REQUIRE_SERVICES=1 (set by .ci/run) the aliases are always defined,
so a server that is down fails the run instead of hiding behind a skip.
QUERYLENS_TEST_DATABASE (sqlite, postgres, mariadb) picks the "default" alias.
"""

from __future__ import annotations

import copy
import os
import socket
from typing import Any

REQUIRE_SERVICES = os.environ.get("QUERYLENS_REQUIRE_SERVICES") == "1"
TEST_DATABASE = os.environ.get("QUERYLENS_TEST_DATABASE", "sqlite")
# Several checkouts may share one database server; a suffix keeps their test
# databases apart (Django drops and recreates the test database on each run).
_TEST_DB_NAME = "test_querylens" + os.environ.get("QUERYLENS_TEST_DB_SUFFIX", "")


def _answers(port: int) -> bool:
    if REQUIRE_SERVICES:
        return True
    # A short probe so a missing server costs half a second, not a connect
    # timeout in every test.
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


_SQLITE: dict[str, Any] = {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}
_POSTGRES: dict[str, Any] = {
    "ENGINE": "django.db.backends.postgresql",
    "HOST": "127.0.0.1",
    "PORT": 5432,
    "USER": "postgres",
    "PASSWORD": "",
    "NAME": "querylens",
    "TEST": {"NAME": _TEST_DB_NAME},
}
_MARIADB: dict[str, Any] = {
    "ENGINE": "django.db.backends.mysql",
    "HOST": "127.0.0.1",
    "PORT": 3306,
    "USER": "root",
    "PASSWORD": "",
    "NAME": "querylens",
    "OPTIONS": {"charset": "utf8mb4"},
    "TEST": {
        "NAME": _TEST_DB_NAME,
        "CHARSET": "utf8mb4",
        "COLLATION": "utf8mb4_unicode_ci",
    },
}

_wanted = {
    "postgres": TEST_DATABASE == "postgres" or _answers(5432),
    "mariadb": TEST_DATABASE == "mariadb" or _answers(3306),
}
if TEST_DATABASE not in {"sqlite", *_wanted}:
    raise ValueError(f"QUERYLENS_TEST_DATABASE={TEST_DATABASE!r}; use sqlite, postgres or mariadb")
if _wanted["mariadb"]:
    # mysqlclient needs a compiler; PyMySQL is pure Python and stands in for it.
    import pymysql

    pymysql.install_as_MySQLdb()

_servers = {"postgres": _POSTGRES, "mariadb": _MARIADB}
DATABASES: dict[str, dict[str, Any]] = {
    "default": copy.deepcopy(_servers.get(TEST_DATABASE, _SQLITE)),
}
DATABASES.update({alias: _servers[alias] for alias, on in _wanted.items() if on})

QUERYLENS_TEST_REDIS_URL: str | None = "redis://127.0.0.1:6379/15" if _answers(6379) else None
CACHES: dict[str, dict[str, Any]] = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
}
if QUERYLENS_TEST_REDIS_URL:
    CACHES["redis"] = {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": QUERYLENS_TEST_REDIS_URL,
        # Same reason as the database suffix: checkouts sharing a server.
        "KEY_PREFIX": _TEST_DB_NAME,
    }

SECRET_KEY = "querylens-tests-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["testserver", "127.0.0.1", "localhost"]
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
ROOT_URLCONF = "tests.urls"
STATIC_URL = "/static/"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "querylens",
    "tests",
]
try:  # a test dependency; a user's checkout without it skips the API tests
    import rest_framework  # type: ignore[import-untyped]  # noqa: F401
except ImportError:
    pass
else:
    INSTALLED_APPS.append("rest_framework")

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "querylens.middleware.QueryLensMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# Staff users are created in many tests; the default hasher would dominate
# the run time.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
