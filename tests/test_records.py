"""The JSON contract of a request record."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client

from querylens.records import RequestRecord
from tests.helpers import record_of

RECORD_KEYS = {
    "id",
    "method",
    "path",
    "view",
    "status",
    "started_at",
    "duration_ms",
    "db_time_ms",
    "query_count",
    "duplicate_count",
    "queries",
    "duplicates",
    "n_plus_one",
}
QUERY_KEYS = {"index", "alias", "sql", "params", "duration_ms", "fingerprint", "callsite"}
GROUP_KEYS = {
    "fingerprint",
    "count",
    "total_ms",
    "callsite",
    "relation",
    "suggestion",
    "sample_sql",
}


@pytest.fixture
def record(library: object, client: Client, settings: Any) -> RequestRecord:
    settings.QUERYLENS = {"HEADERS": "always"}
    return record_of(client.get("/fk_loop/"))


def test_record_has_the_documented_keys(record: RequestRecord) -> None:
    data = record.to_dict()
    assert set(data) >= RECORD_KEYS
    assert set(data["queries"][0]) >= QUERY_KEYS
    assert set(data["queries"][0]["callsite"]) == {"file", "line", "function"}
    assert set(data["n_plus_one"][0]) >= GROUP_KEYS
    assert {"fingerprint", "count", "sql"} <= set(data["duplicates"][0])


def test_record_is_json_and_round_trips(record: RequestRecord) -> None:
    text = json.dumps(record.to_dict())
    again = RequestRecord.from_dict(json.loads(text))
    assert again == record
    assert again.to_dict() == record.to_dict()


def test_values_have_the_documented_types(record: RequestRecord) -> None:
    data = record.to_dict()
    assert data["method"] == "GET"
    assert data["status"] == 200
    assert data["started_at"].endswith("+00:00")
    assert isinstance(data["duration_ms"], float)
    assert data["queries"][0]["index"] == 0
    group = data["n_plus_one"][0]
    assert group["relation"] == "tests.Book.author"
    assert group["suggestion"] == 'select_related("author")'
    quote = "`" if "`" in group["sample_sql"] else '"'  # MariaDB quotes with backticks
    assert f"{quote}tests_author{quote}.{quote}id{quote} = %s" in group["sample_sql"]


def test_odd_params_become_json_safe(db: None) -> None:
    import datetime as dt
    import decimal
    import uuid

    from querylens.analysis import _json_params

    params = [
        dt.date(2026, 11, 21),
        decimal.Decimal("1.50"),
        uuid.UUID(int=1),
        b"\x00\x01",
        "x" * 2000,
        object(),
    ]
    safe = _json_params(params)
    json.dumps(safe)
    assert safe[:4] == ["2026-11-21", "1.50", "00000000-0000-0000-0000-000000000001", "<2 bytes>"]
    assert len(safe[4]) == 1001
    assert safe[5].startswith("<object object")


@pytest.mark.django_db
def test_a_record_whose_queries_and_duplicates_are_not_built_yet_pickles_with_them() -> None:
    import pickle

    from querylens.testing import recorded
    from tests.models import Publisher

    Publisher.objects.create(name="Pickled")
    with recorded() as result:
        list(Publisher.objects.filter(name="Pickled"))
        list(Publisher.objects.filter(name="Pickled"))
    record = result.record
    assert "_queries" not in record.__dict__, "the query records were built already"
    assert "_duplicates" not in record.__dict__, "the duplicate groups were built already"
    assert record.duplicate_count == 1
    copy = pickle.loads(pickle.dumps(record))
    assert copy == record
    assert [query.sql for query in copy.queries] == [query.sql for query in record.queries]
    assert copy.queries[0].params == ["Pickled"]
    (group,) = copy.duplicates
    assert (group.count, group.query_indexes) == (2, [0, 1])
    assert group.sql == copy.queries[0].sql
    assert group.fingerprint == copy.queries[0].fingerprint
