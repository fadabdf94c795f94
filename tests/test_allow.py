"""QUERYLENS["ALLOW"]: accepted N+1 groups stay visible, marked, and do not count."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from querylens.checks import check_settings
from querylens.testing import assert_no_n_plus_one
from tests.helpers import latest_record, querylens_staff
from tests.models import Book

pytestmark = pytest.mark.usefixtures("library")

ALLOW_AUTHOR = {"relation": "tests.Book.author", "reason": "six books in the fixture"}


def test_an_allowed_group_is_not_counted_in_the_headers(client: Client, settings: Any) -> None:
    settings.QUERYLENS = {"HEADERS": "always", "ALLOW": [ALLOW_AUTHOR]}
    response = client.get("/fk_loop/")
    assert response["X-QueryLens-NPlusOne"] == "0"
    (group,) = latest_record().n_plus_one
    assert group.allowed == "six books in the fixture"
    # Another N+1 still counts.
    assert client.get("/reverse_fk/")["X-QueryLens-NPlusOne"] == "1"


@pytest.mark.parametrize(
    "entry",
    [
        {"callsite": "tests/views.py:fk_loop", "reason": "r"},
        {"relation": "tests.Book.*", "reason": "r"},
        {"callsite": "tests/*:fk_*", "relation": "tests.Book.author", "reason": "r"},
    ],
)
def test_entries_match_by_callsite_relation_and_wildcards(
    client: Client, settings: Any, entry: dict[str, str]
) -> None:
    settings.QUERYLENS = {"HEADERS": "always", "ALLOW": [entry]}
    assert client.get("/fk_loop/")["X-QueryLens-NPlusOne"] == "0"


def test_an_entry_must_match_all_it_gives(client: Client, settings: Any) -> None:
    entry = {"callsite": "tests/views.py:fk_loop", "relation": "tests.Author.books", "reason": "r"}
    settings.QUERYLENS = {"HEADERS": "always", "ALLOW": [entry]}
    assert client.get("/fk_loop/")["X-QueryLens-NPlusOne"] == "1"


def test_a_fingerprint_entry_matches(client: Client, settings: Any) -> None:
    settings.QUERYLENS = {"HEADERS": "always"}
    client.get("/fk_loop/")
    fingerprint = latest_record().n_plus_one[0].fingerprint
    settings.QUERYLENS = {
        "HEADERS": "always",
        "ALLOW": [{"fingerprint": fingerprint, "reason": "r"}],
    }
    assert client.get("/fk_loop/")["X-QueryLens-NPlusOne"] == "0"


def test_assert_no_n_plus_one_lets_an_allowed_group_pass(settings: Any) -> None:
    settings.QUERYLENS = {"ALLOW": [ALLOW_AUTHOR]}
    with assert_no_n_plus_one():
        [book.author.name for book in Book.objects.all()]


def test_the_pages_mark_an_allowed_group(client: Client, settings: Any) -> None:
    settings.QUERYLENS = {"ALLOW": [ALLOW_AUTHOR]}
    client.get("/fk_loop/")
    record = latest_record()
    staff = Client()
    staff.force_login(querylens_staff("reader"))
    page = staff.get(f"/admin/querylens/requests/{record.id}/").content.decode()
    assert "allowed: six books in the fixture" in page
    hotspots = staff.get("/admin/querylens/").content.decode()
    assert "allowed: six books in the fixture" in hotspots
    exported = staff.get(f"/admin/querylens/requests/{record.id}/?format=json").json()
    assert exported["n_plus_one"][0]["allowed"] == "six books in the fixture"
    # The N+1 filter of the requests list looks for unexpected ones only.
    listing = staff.get("/admin/querylens/requests/?n_plus_one=1").content.decode()
    assert record.id not in listing


@pytest.mark.parametrize(
    ("value", "check_id", "text"),
    [
        ("relation", "querylens.E021", "not a list"),
        (["x"], "querylens.E022", "is str, not a dict"),
        ([{"relation": "a.B.c"}], "querylens.E022", "has no reason"),
        ([{"reason": "r"}], "querylens.E022", "matches nothing"),
        ([{"relation": "a.B.c", "reason": "r", "why": 1}], "querylens.E022", "unknown key"),
        ([{"callsite": "views.py", "reason": "r"}], "querylens.E022", "not 'file:function'"),
        ([{"fingerprint": "XYZ", "reason": "r"}], "querylens.E022", "not lower-case hex"),
    ],
)
def test_bad_allow_entries_are_reported(
    settings: Any, value: Any, check_id: str, text: str
) -> None:
    settings.QUERYLENS = {"ALLOW": value}
    messages = [m for m in check_settings() if m.id == check_id]
    assert messages, [m.id for m in check_settings()]
    assert text in messages[0].msg


def test_a_valid_allow_list_passes_the_checks(settings: Any) -> None:
    settings.QUERYLENS = {"ALLOW": [ALLOW_AUTHOR, {"callsite": "shop/a.py:*", "reason": "r"}]}
    assert check_settings() == []
