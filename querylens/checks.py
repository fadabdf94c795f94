"""System checks for ``settings.QUERYLENS`` and the middleware's place.

Ids are stable and never reused; docs/checks.rst lists them all.
"""

from __future__ import annotations

import difflib
import os
import re
import shlex
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core import checks
from django.utils.module_loading import import_string

from querylens.conf import DEFAULTS, HEADER_POLICIES

MIDDLEWARE_PATH = "querylens.middleware.QueryLensMiddleware"

#: Middleware known to run queries (reading the session or the user, looking
#: up a site or a redirect): querylens must come before them to see those.
QUERYING_MIDDLEWARE = (
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "django.contrib.auth.middleware.RemoteUserMiddleware",
    "django.contrib.auth.middleware.PersistentRemoteUserMiddleware",
    "django.contrib.sites.middleware.CurrentSiteMiddleware",
    "django.contrib.redirects.middleware.RedirectFallbackMiddleware",
    "django.contrib.flatpages.middleware.FlatpageFallbackMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
)


def register_checks() -> None:
    checks.register(check_settings)
    checks.register(check_middleware)
    checks.register(check_storage_backend)


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool)


def _is_positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _is_rate(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1


def _is_threshold(value: Any) -> bool:
    return _is_positive_int(value) and value >= 2


def _is_nonempty_str(value: Any) -> bool:
    return isinstance(value, str) and bool(value)


def _is_header_policy(value: Any) -> bool:
    return value in HEADER_POLICIES


def _is_name_list(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and all(
        isinstance(item, str) and item.strip() for item in value
    )


#: key -> (check id, validator, what is expected)
_RULES: dict[str, tuple[str, Callable[[Any], bool], str]] = {
    "ENABLED": ("querylens.E003", _is_bool, "True or False"),
    "HEADERS": (
        "querylens.E004",
        _is_header_policy,
        "one of " + ", ".join(map(repr, HEADER_POLICIES)),
    ),
    "RECORD_PARAMS": ("querylens.E005", _is_bool, "True or False"),
    "MAX_QUERIES_PER_REQUEST": ("querylens.E006", _is_positive_int, "a positive integer"),
    "BUFFER_SIZE": ("querylens.E007", _is_positive_int, "a positive integer"),
    "SAMPLE_RATE": ("querylens.E008", _is_rate, "a number from 0 to 1"),
    # EXCLUDE_PATHS (E009) and STORAGE (E011) have checks of their own below.
    "N_PLUS_ONE_THRESHOLD": ("querylens.E010", _is_threshold, "an integer of at least 2"),
    "CACHE_ALIAS": ("querylens.E012", _is_nonempty_str, "the name of an alias in CACHES"),
    "CACHE_KEY_PREFIX": ("querylens.E013", _is_nonempty_str, "a non-empty string"),
    "CACHE_TIMEOUT": ("querylens.E014", _is_positive_int, "a positive number of seconds"),
    "EXPLAIN_TIMEOUT_MS": ("querylens.E015", _is_positive_int, "a positive number of milliseconds"),
    "STACK_DEPTH": ("querylens.E016", _is_positive_int, "a positive integer"),
    "REDACT": ("querylens.E018", _is_bool, "True or False"),
    "RECORD_OUTSIDE_REQUESTS": ("querylens.E023", _is_bool, "True or False"),
    "REDACT_COLUMNS": (
        "querylens.E019",
        _is_name_list,
        'a list of non-empty column-name words, e.g. ["pin", "ssn"]',
    ),
    "REDACT_TABLES": (
        "querylens.E020",
        _is_name_list,
        'a list of non-empty table names, e.g. ["myapp_apikey"]',
    ),
}


def check_settings(**kwargs: Any) -> list[checks.CheckMessage]:
    user = getattr(settings, "QUERYLENS", {})
    if not isinstance(user, dict):
        return [
            checks.Error(
                f"QUERYLENS must be a dict, not {type(user).__name__}.",
                hint='For example QUERYLENS = {"HEADERS": "staff"}.',
                id="querylens.E001",
            )
        ]
    errors: list[checks.CheckMessage] = []
    for key in user:
        if key not in DEFAULTS:
            close = difflib.get_close_matches(str(key), DEFAULTS, n=1)
            hint = f"Did you mean {close[0]!r}? " if close else ""
            errors.append(
                checks.Error(
                    f"QUERYLENS has an unknown key {key!r}.",
                    hint=hint + "Known keys: " + ", ".join(sorted(DEFAULTS)) + ".",
                    id="querylens.E002",
                )
            )
    for key, (check_id, valid, expected) in _RULES.items():
        if key in user and not valid(user[key]):
            errors.append(
                checks.Error(
                    f"QUERYLENS[{key!r}] is {user[key]!r}.",
                    hint=f"Set it to {expected} (default {DEFAULTS[key]!r}).",
                    id=check_id,
                )
            )
    errors.extend(_check_exclude_paths(user.get("EXCLUDE_PATHS")))
    errors.extend(_check_allow(user.get("ALLOW")))
    errors.extend(_check_storage(user))
    if user.get("REDACT", True) is False:
        errors.append(
            checks.Warning(
                "QUERYLENS['REDACT'] is False: session keys, password hashes and API "
                "tokens in query parameters are stored and shown on the querylens pages.",
                hint="Remove the setting (redaction is on by default) unless this "
                "database holds no real users' secrets.",
                id="querylens.W004",
            )
        )
    return errors


def _check_exclude_paths(value: Any) -> list[checks.CheckMessage]:
    if value is None:
        return []
    hint = r'Give a list of regular expressions matched against request.path, e.g. [r"^/healthz$"].'
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        return [
            checks.Error(
                f"QUERYLENS['EXCLUDE_PATHS'] is {value!r}.", hint=hint, id="querylens.E009"
            )
        ]
    errors: list[checks.CheckMessage] = []
    for pattern in value:
        try:
            re.compile(pattern)
        except (re.error, TypeError) as exc:
            errors.append(
                checks.Error(
                    f"QUERYLENS['EXCLUDE_PATHS'] has an invalid pattern {pattern!r}: {exc}.",
                    hint=hint,
                    id="querylens.E009",
                )
            )
    return errors


def _check_allow(value: Any) -> list[checks.CheckMessage]:
    from querylens import allow

    if value is None:
        return []
    example = (
        'For example [{"relation": "shop.Book.author", "callsite": "shop/views.py:book_list", '
        '"reason": "ten rows at most"}].'
    )
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        return [
            checks.Error(
                f"QUERYLENS['ALLOW'] is {value!r}, not a list of entries.",
                hint=example,
                id="querylens.E021",
            )
        ]
    errors: list[checks.CheckMessage] = []
    for position, entry in enumerate(value):
        for problem in allow.problems(entry):
            errors.append(
                checks.Error(
                    f"QUERYLENS['ALLOW'][{position}] {problem}.",
                    hint="Each entry is a dict with a non-empty 'reason' and at least one of "
                    "'relation', 'callsite' ('file:function') and 'fingerprint'. " + example,
                    id="querylens.E022",
                )
            )
    return errors


def _check_storage(user: dict[str, Any]) -> list[checks.CheckMessage]:
    from querylens.storage import BaseStorage

    path = user.get("STORAGE", DEFAULTS["STORAGE"])
    hint = "Use 'querylens.storage.MemoryStorage' or 'querylens.storage.CacheStorage'."
    try:
        backend = import_string(path) if isinstance(path, str) else None
    except ImportError as exc:
        return [
            checks.Error(
                f"QUERYLENS['STORAGE'] {path!r} cannot be imported: {exc}.",
                hint=hint,
                id="querylens.E011",
            )
        ]
    if not (isinstance(backend, type) and issubclass(backend, BaseStorage)):
        return [
            checks.Error(
                f"QUERYLENS['STORAGE'] {path!r} is not a querylens storage class.",
                hint=hint,
                id="querylens.E011",
            )
        ]
    return []


def check_middleware(**kwargs: Any) -> list[checks.CheckMessage]:
    middleware = list(getattr(settings, "MIDDLEWARE", None) or [])
    if MIDDLEWARE_PATH not in middleware:
        return [
            checks.Warning(
                f"{MIDDLEWARE_PATH} is not in MIDDLEWARE: requests are not measured.",
                hint="Add it right after django.middleware.security.SecurityMiddleware.",
                id="querylens.W001",
            )
        ]
    position = middleware.index(MIDDLEWARE_PATH)
    before = [name for name in middleware[:position] if name in QUERYING_MIDDLEWARE]
    if before:
        return [
            checks.Warning(
                f"{MIDDLEWARE_PATH} comes after {', '.join(before)}, which can query the "
                "database: those queries are not measured.",
                hint="Move it above them, right after django.middleware.security.SecurityMiddleware.",
                id="querylens.W002",
            )
        ]
    return []


def check_storage_backend(**kwargs: Any) -> list[checks.CheckMessage]:
    """Whether the storage can hold what the server's processes record.

    ``CacheStorage`` needs its cache alias (E017). ``MemoryStorage`` under a
    server with several worker processes shows each page one process's slice
    of the traffic (W003).
    """
    from querylens.storage import CacheStorage, MemoryStorage

    user = getattr(settings, "QUERYLENS", {})
    if not isinstance(user, dict):
        return []  # E001
    path = user.get("STORAGE", DEFAULTS["STORAGE"])
    try:
        backend = import_string(path) if isinstance(path, str) else None
    except ImportError:
        return []  # E011
    if not isinstance(backend, type):
        return []  # E011
    alias = user.get("CACHE_ALIAS", DEFAULTS["CACHE_ALIAS"])
    if issubclass(backend, CacheStorage) and _is_nonempty_str(alias):
        names = sorted(getattr(settings, "CACHES", None) or {})
        if alias not in names:
            return [
                checks.Error(
                    f"QUERYLENS['CACHE_ALIAS'] is {alias!r} but CACHES has no such alias "
                    f"(it has {', '.join(map(repr, names)) or 'none'}).",
                    hint="Add a Redis or memcached cache to CACHES under that name, or set "
                    "CACHE_ALIAS to one of its aliases.",
                    id="querylens.E017",
                )
            ]
    if issubclass(backend, MemoryStorage):
        workers = _declared_workers()
        if workers is not None:
            variable, count = workers
            return [
                checks.Warning(
                    f"QUERYLENS['STORAGE'] keeps requests in each process's memory, but "
                    f"{variable} asks for {count} worker processes: each page shows only "
                    "the requests its own process served.",
                    hint="Use 'querylens.storage.CacheStorage' with a Redis cache "
                    "(see the staging guide).",
                    id="querylens.W003",
                )
            ]
    return []


def _declared_workers() -> tuple[str, int] | None:
    """An environment variable asking a server for several processes, if any.

    A heuristic: gunicorn and uvicorn read their worker count from the
    environment variables below, which deployments (and PaaS such as Heroku)
    set for every process, including ``manage.py check --deploy`` and
    ``migrate``. A count given on the server's command line or in its config
    file cannot be seen from here.
    """
    for variable in ("WEB_CONCURRENCY", "UVICORN_WORKERS"):
        count = _int_or_none(os.environ.get(variable))
        if count is not None and count > 1:
            return variable, count
    try:
        arguments = shlex.split(os.environ.get("GUNICORN_CMD_ARGS", ""))
    except ValueError:
        return None
    for position, argument in enumerate(arguments):
        value: str | None = None
        if argument in ("-w", "--workers"):
            value = arguments[position + 1] if position + 1 < len(arguments) else None
        elif argument.startswith("--workers="):
            value = argument.partition("=")[2]
        elif argument.startswith("-w") and len(argument) > 2:
            value = argument[2:]
        count = _int_or_none(value)
        if count is not None and count > 1:
            return "GUNICORN_CMD_ARGS", count
    return None


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
