"""Settings for querylens, read from ``settings.QUERYLENS``.

Every key has a typed property with its default beside it. A value is read
once and kept until Django's ``setting_changed`` signal says a setting
changed (``override_settings``, pytest-django's ``settings`` fixture), so a
request pays one attribute lookup per setting, not a read and a conversion.
Validation lives in ``querylens.checks`` so that a bad value is reported
once, at start-up, with a hint, instead of failing a request.
"""

from __future__ import annotations

import re
from functools import cached_property
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed

HEADER_POLICIES = ("auto", "staff", "always", "never")

#: Every key querylens understands, with its default.
DEFAULTS: dict[str, Any] = {
    "ENABLED": True,
    "HEADERS": "auto",
    "RECORD_PARAMS": True,
    "MAX_QUERIES_PER_REQUEST": 1000,
    "BUFFER_SIZE": 200,
    "SAMPLE_RATE": 1.0,
    "EXCLUDE_PATHS": None,
    "N_PLUS_ONE_THRESHOLD": 2,
    "STORAGE": "querylens.storage.MemoryStorage",
    "CACHE_ALIAS": "default",
    "CACHE_KEY_PREFIX": "querylens",
    "CACHE_TIMEOUT": 86400,
    "EXPLAIN_TIMEOUT_MS": 5000,
    "STACK_DEPTH": 30,
    "REDACT": True,
    "REDACT_COLUMNS": (),
    "REDACT_TABLES": (),
    "ALLOW": (),
    "RECORD_OUTSIDE_REQUESTS": False,
}


class QueryLensSettings:
    """Typed view of the ``QUERYLENS`` settings dict, kept until a setting changes."""

    def forget(self, **kwargs: Any) -> None:
        """Drop every kept value (a ``setting_changed`` receiver).

        Any setting, not only ``QUERYLENS``: the default of
        ``EXCLUDE_PATHS`` follows ``STATIC_URL`` and ``MEDIA_URL``.
        """
        self.__dict__.clear()

    @property
    def _user(self) -> dict[str, Any]:
        value = getattr(settings, "QUERYLENS", None)
        # A non-dict is reported by querylens.E001; behave as if unset meanwhile.
        return value if isinstance(value, dict) else {}

    def _get(self, key: str) -> Any:
        return self._user.get(key, DEFAULTS[key])

    @cached_property
    def ENABLED(self) -> bool:
        return bool(self._get("ENABLED"))

    @cached_property
    def HEADERS(self) -> str:
        return str(self._get("HEADERS"))

    @cached_property
    def RECORD_PARAMS(self) -> bool:
        return bool(self._get("RECORD_PARAMS"))

    @cached_property
    def MAX_QUERIES_PER_REQUEST(self) -> int:
        return int(self._get("MAX_QUERIES_PER_REQUEST"))

    @cached_property
    def BUFFER_SIZE(self) -> int:
        return int(self._get("BUFFER_SIZE"))

    @cached_property
    def SAMPLE_RATE(self) -> float:
        return float(self._get("SAMPLE_RATE"))

    @cached_property
    def EXCLUDE_PATHS(self) -> list[str]:
        """Regexes matched (``re.match``) against ``request.path``.

        ``None``, the default, excludes ``STATIC_URL`` and ``MEDIA_URL`` when
        they are local paths. querylens's own pages are always excluded.
        """
        value = self._get("EXCLUDE_PATHS")
        if value is not None:
            return list(value)
        defaults = []
        for url in (getattr(settings, "STATIC_URL", None), getattr(settings, "MEDIA_URL", None)):
            if url and str(url).startswith("/") and str(url) != "/":
                defaults.append("^" + re.escape(str(url)))
        return defaults

    @cached_property
    def N_PLUS_ONE_THRESHOLD(self) -> int:
        return int(self._get("N_PLUS_ONE_THRESHOLD"))

    @cached_property
    def STORAGE(self) -> str:
        return str(self._get("STORAGE"))

    @cached_property
    def CACHE_ALIAS(self) -> str:
        return str(self._get("CACHE_ALIAS"))

    @cached_property
    def CACHE_KEY_PREFIX(self) -> str:
        return str(self._get("CACHE_KEY_PREFIX"))

    @cached_property
    def CACHE_TIMEOUT(self) -> int:
        return int(self._get("CACHE_TIMEOUT"))

    @cached_property
    def EXPLAIN_TIMEOUT_MS(self) -> int:
        return int(self._get("EXPLAIN_TIMEOUT_MS"))

    @cached_property
    def STACK_DEPTH(self) -> int:
        return int(self._get("STACK_DEPTH"))

    @cached_property
    def RECORD_OUTSIDE_REQUESTS(self) -> bool:
        """Record management commands and ``django.tasks`` runs (``querylens.outside_requests``)."""
        return bool(self._get("RECORD_OUTSIDE_REQUESTS"))

    @cached_property
    def ALLOW(self) -> list[Any]:
        """Accepted N+1 groups, each with a reason (``querylens.allow``)."""
        value = self._get("ALLOW")
        return list(value) if isinstance(value, (list, tuple)) else []

    @cached_property
    def REDACT(self) -> bool:
        """Replace secrets by ``[redacted]`` before storing (``querylens.redaction``)."""
        return bool(self._get("REDACT"))

    @cached_property
    def REDACT_COLUMNS(self) -> list[str]:
        """More words that make a column sensitive, added to the built-in ones."""
        return [str(word) for word in self._get("REDACT_COLUMNS")]

    @cached_property
    def REDACT_TABLES(self) -> list[str]:
        """More tables whose every parameter is a secret, added to the built-in ones."""
        return [str(table) for table in self._get("REDACT_TABLES")]


conf = QueryLensSettings()
setting_changed.connect(conf.forget, dispatch_uid="querylens.conf.forget")
