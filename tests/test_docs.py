"""The reference pages list everything a user can set or meet."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from querylens.conf import DEFAULTS

DOCS = Path(__file__).resolve().parent.parent / "docs"
PACKAGE = Path(__file__).resolve().parent.parent / "querylens"


def test_every_setting_is_documented() -> None:
    text = (DOCS / "settings.rst").read_text()
    missing = [key for key in DEFAULTS if f"``{key}``" not in text]
    assert missing == []


def test_every_check_id_is_documented() -> None:
    code = (PACKAGE / "checks.py").read_text()
    used = set(re.findall(r"querylens\.[EW]\d{3}", code))
    assert used, "no check ids found"
    text = (DOCS / "checks.rst").read_text()
    assert sorted(check for check in used if f"``{check}``" not in text) == []


@pytest.mark.parametrize(
    "header",
    [
        "X-QueryLens-Request",
        "X-QueryLens-Queries",
        "X-QueryLens-Time",
        "X-QueryLens-Duplicates",
        "X-QueryLens-NPlusOne",
        "Server-Timing",
    ],
)
def test_every_header_is_documented(header: str) -> None:
    assert header in (DOCS / "headers.rst").read_text()
    assert f'"{header}"' in (PACKAGE / "middleware.py").read_text()


def test_every_permission_is_documented() -> None:
    from querylens import permissions

    text = (DOCS / "staging.rst").read_text()
    for permission in (permissions.VIEW_HOTSPOTS, permissions.VIEW_REQUESTS, permissions.EXPLAIN):
        assert f"``{permission}``" in text


def test_the_api_page_documents_exactly_the_public_api() -> None:
    import querylens

    text = (DOCS / "api.rst").read_text()
    documented = set(re.findall(r"^\.\. auto\w+:: querylens\.(\w+)$", text, re.M))
    assert documented == set(querylens.__all__)
    for name in querylens.__all__:
        assert getattr(querylens, name) is not None
