"""System checks: every bad setting gets its own stable id and a hint."""

from __future__ import annotations

from typing import Any

import pytest
from django.core import checks
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from querylens.checks import check_middleware, check_settings

SECURITY = "django.middleware.security.SecurityMiddleware"
OURS = "querylens.middleware.QueryLensMiddleware"
SESSIONS = "django.contrib.sessions.middleware.SessionMiddleware"


def ids(messages: list[checks.CheckMessage]) -> list[str]:
    return [message.id for message in messages]  # type: ignore[misc]


def test_default_settings_pass(settings: Any) -> None:
    assert check_settings() == []
    assert check_middleware() == []


def test_not_a_dict(settings: Any) -> None:
    settings.QUERYLENS = ["HEADERS"]
    (error,) = check_settings()
    assert error.id == "querylens.E001"
    assert "must be a dict, not list" in error.msg


def test_unknown_key_suggests_the_close_one(settings: Any) -> None:
    settings.QUERYLENS = {"HEADER": "staff"}
    (error,) = check_settings()
    assert error.id == "querylens.E002"
    assert "'HEADER'" in error.msg
    assert error.hint is not None
    assert "Did you mean 'HEADERS'?" in error.hint


@pytest.mark.parametrize(
    ("key", "value", "check_id"),
    [
        ("ENABLED", "yes", "querylens.E003"),
        ("HEADERS", "sometimes", "querylens.E004"),
        ("RECORD_PARAMS", 1, "querylens.E005"),
        ("MAX_QUERIES_PER_REQUEST", 0, "querylens.E006"),
        ("BUFFER_SIZE", "100", "querylens.E007"),
        ("SAMPLE_RATE", 1.5, "querylens.E008"),
        ("SAMPLE_RATE", True, "querylens.E008"),
        ("EXCLUDE_PATHS", "^/static/", "querylens.E009"),
        ("EXCLUDE_PATHS", ["(unclosed"], "querylens.E009"),
        ("N_PLUS_ONE_THRESHOLD", 1, "querylens.E010"),
        ("STORAGE", "no.such.Storage", "querylens.E011"),
        ("STORAGE", "querylens.conf.QueryLensSettings", "querylens.E011"),
        ("CACHE_ALIAS", "", "querylens.E012"),
        ("CACHE_KEY_PREFIX", 3, "querylens.E013"),
        ("CACHE_TIMEOUT", -1, "querylens.E014"),
        ("EXPLAIN_TIMEOUT_MS", 0.5, "querylens.E015"),
        ("STACK_DEPTH", None, "querylens.E016"),
    ],
)
def test_each_bad_value_has_its_id_and_a_hint(
    settings: Any, key: str, value: Any, check_id: str
) -> None:
    settings.QUERYLENS = {key: value}
    errors = [e for e in check_settings() if e.id == check_id]
    assert len(errors) == 1, ids(check_settings())
    assert errors[0].level == checks.ERROR
    assert key in errors[0].msg
    assert errors[0].hint


@pytest.mark.parametrize(
    "value",
    [
        {
            "HEADERS": "never",
            "SAMPLE_RATE": 0,
            "EXCLUDE_PATHS": [r"^/health$"],
            "N_PLUS_ONE_THRESHOLD": 5,
        },
        {"SAMPLE_RATE": 1, "STORAGE": "querylens.storage.MemoryStorage", "ENABLED": False},
    ],
)
def test_good_values_pass(settings: Any, value: dict[str, Any]) -> None:
    settings.QUERYLENS = value
    assert check_settings() == []


def test_missing_middleware_warns(settings: Any) -> None:
    settings.MIDDLEWARE = [SECURITY, SESSIONS]
    (warning,) = check_middleware()
    assert warning.id == "querylens.W001"
    assert warning.level == checks.WARNING


def test_middleware_after_a_querying_middleware_warns(settings: Any) -> None:
    settings.MIDDLEWARE = [SECURITY, SESSIONS, OURS]
    (warning,) = check_middleware()
    assert warning.id == "querylens.W002"
    assert SESSIONS in warning.msg
    assert warning.hint is not None
    assert "SecurityMiddleware" in warning.hint


def test_checks_run_through_manage_py_check(settings: Any) -> None:
    settings.QUERYLENS = {"HEADERS": "sometimes"}
    with pytest.raises(SystemCheckError, match=r"querylens\.E004"):
        call_command("check")
