"""Secrets never reach storage: session keys, password hashes, tokens.

Each test runs real queries on the default database (SQLite, PostgreSQL or
MariaDB, whichever the run uses) and reads what a user of the pages would
read: the JSON export of the stored record.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import IntegrityError, connection, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext

from querylens.checks import check_settings
from querylens.fingerprint import fingerprint
from querylens.redaction import REDACTED
from querylens.testing import recorded
from tests.helpers import latest_record, querylens_staff
from tests.models import ApiKey, Publisher

pytestmark = pytest.mark.django_db

SECRET_TOKEN = "tok_4f9c2d7e1a"


def exported(record_id: str) -> str:
    """The JSON export of a stored record, as a superuser reads it."""
    client = Client()
    client.force_login(querylens_staff("reader"))
    response = client.get(f"/admin/querylens/requests/{record_id}/?format=json")
    assert response.status_code == 200
    return response.content.decode()


def test_the_session_key_is_not_stored(library: Any) -> None:
    user = User.objects.create_user("victim", password="correct horse")
    client = Client()
    assert client.login(username="victim", password="correct horse")
    session_key = client.cookies["sessionid"].value
    client.get("/whoami/")
    record = latest_record()
    session_queries = [q for q in record.queries if "django_session" in q.sql]
    assert session_queries, "the session was not read through querylens"
    assert all(q.params and set(q.params) == {REDACTED} for q in session_queries)
    text = exported(record.id)
    assert session_key not in text
    # The user's own lookup keeps its (harmless) id.
    user_query = next(q for q in record.queries if '"auth_user"' in q.sql or "`auth_user`" in q.sql)
    assert user.pk in user_query.params


def _strings_held_by(root: object) -> set[str]:
    """Every string reachable from ``root``'s data (not through code, classes or modules)."""
    import gc
    import types

    skip = (types.FunctionType, types.ModuleType, types.CodeType, type, types.BuiltinFunctionType)
    found: set[str] = set()
    seen: set[int] = set()
    todo = [root]
    while todo and len(seen) < 200_000:
        item = todo.pop()
        if id(item) in seen or isinstance(item, skip):
            continue
        seen.add(id(item))
        if isinstance(item, str):
            found.add(item)
            continue
        todo.extend(gc.get_referents(item))
    return found


def test_a_kept_record_holds_no_secret_even_before_anyone_reads_it(library: Any) -> None:
    """The query records are built when first read; what waits for that is redacted already."""
    User.objects.create_user("victim", password="correct horse")
    client = Client()
    assert client.login(username="victim", password="correct horse")
    session_key = client.cookies["sessionid"].value
    client.get("/whoami/")
    record = latest_record()
    assert "_queries" not in record.__dict__, "the query records were built already"
    held = _strings_held_by(record)
    assert not any(session_key in text for text in held)
    assert any("django_session" in text for text in held)  # the walk reached the queries
    # Read, they are the redacted ones too.
    session = [q for q in record.queries if "django_session" in q.sql]
    assert session
    assert all(set(q.params) == {REDACTED} for q in session)


def test_a_password_hash_is_not_stored() -> None:
    user = User.objects.create_user("changer", password="old password")
    with recorded() as result:
        user.set_password("new password")
        user.save()
    update = next(q for q in result.record.queries if q.sql.lstrip().upper().startswith("UPDATE"))
    assert user.password not in json.dumps(result.record.to_dict())
    assert REDACTED in update.params
    # Other columns of the same statement stay readable.
    assert "changer" in update.params


def test_a_token_lookup_is_redacted_and_keeps_its_verdicts() -> None:
    tokens = [f"{SECRET_TOKEN}{n}" for n in range(3)]
    ApiKey.objects.bulk_create(ApiKey(name=f"key {n}", token=t) for n, t in enumerate(tokens))
    with recorded() as result, CaptureQueriesContext(connection) as executed:
        for token in tokens:
            ApiKey.objects.get(token=token)
        ApiKey.objects.get(token=tokens[0])  # the only true duplicate
    record = result.record
    assert all(SECRET_TOKEN not in str(q.params) for q in record.queries)
    # Verdicts come from the real values: the loop's three different tokens
    # are an N+1, and only the token looked up again is a duplicate (all
    # four would look alike once redacted).
    (group,) = record.n_plus_one
    assert group.count == 3
    assert record.duplicate_count == 1
    # The fingerprint of what the database really ran, token and all.
    assert SECRET_TOKEN in executed.captured_queries[0]["sql"]
    assert group.fingerprint == fingerprint(executed.captured_queries[0]["sql"])


def test_an_inlined_literal_is_redacted_in_the_sql_text() -> None:
    ApiKey.objects.create(name="inline", token=SECRET_TOKEN)
    table = connection.ops.quote_name(ApiKey._meta.db_table)
    sql = f"SELECT name FROM {table} WHERE token = '{SECRET_TOKEN}' AND name = 'inline'"
    with recorded() as result, connection.cursor() as cursor:
        cursor.execute(sql)
        assert list(cursor.fetchall()) == [("inline",)]
    (query,) = result.record.queries
    assert SECRET_TOKEN not in query.sql
    assert f"token = '{REDACTED}'" in query.sql
    assert "name = 'inline'" in query.sql
    assert query.fingerprint == fingerprint(sql)


@pytest.mark.parametrize("record_params", [True, False])
def test_a_secret_echoed_in_an_error_message_is_redacted(
    settings: Any, record_params: bool
) -> None:
    settings.QUERYLENS = {"RECORD_PARAMS": record_params}
    ApiKey.objects.create(name="first", token=SECRET_TOKEN)
    with recorded() as result, pytest.raises(IntegrityError), transaction.atomic():
        ApiKey.objects.create(name="second", token=SECRET_TOKEN)
    failed = [q for q in result.record.queries if q.error]
    assert failed, "the failing INSERT was not recorded"
    for query in failed:
        assert SECRET_TOKEN not in query.error
        assert "IntegrityError" in query.error
    assert SECRET_TOKEN not in json.dumps(result.record.to_dict())


def test_more_columns_can_be_declared_sensitive(settings: Any) -> None:
    settings.QUERYLENS = {"REDACT_COLUMNS": ["name"]}
    with recorded() as result:
        list(ApiKey.objects.filter(name="Ada Lovelace"))
    (query,) = result.record.queries
    assert query.params == [REDACTED]


def test_more_tables_can_be_declared_sensitive(settings: Any) -> None:
    settings.QUERYLENS = {"REDACT_TABLES": ["tests_publisher"]}
    with recorded() as result:
        list(Publisher.objects.filter(pk=7))
    (query,) = result.record.queries
    assert query.params == [REDACTED]


def test_redaction_can_be_turned_off_with_a_warning(settings: Any) -> None:
    settings.QUERYLENS = {"REDACT": False}
    with recorded() as result:
        list(ApiKey.objects.filter(token=SECRET_TOKEN))
    assert SECRET_TOKEN in result.record.queries[0].params
    assert [m.id for m in check_settings()] == ["querylens.W004"]


@pytest.mark.parametrize(
    ("key", "value", "check_id"),
    [
        ("REDACT", "yes", "querylens.E018"),
        ("REDACT_COLUMNS", "password", "querylens.E019"),
        ("REDACT_COLUMNS", ["pin", ""], "querylens.E019"),
        ("REDACT_TABLES", [3], "querylens.E020"),
    ],
)
def test_bad_redaction_settings_are_reported(
    settings: Any, key: str, value: Any, check_id: str
) -> None:
    settings.QUERYLENS = {key: value}
    assert check_id in [m.id for m in check_settings()]


def test_a_redacted_query_is_not_explained_with_fake_values(library: Any) -> None:
    ApiKey.objects.create(name="explained", token=SECRET_TOKEN)
    client = Client()
    client.force_login(querylens_staff("explainer"))
    with recorded() as result:
        list(ApiKey.objects.filter(token=SECRET_TOKEN))
    record = result.record
    record.id = "redactedquery1"
    from querylens.storage import get_storage

    get_storage().add(record)
    response = client.post(f"/admin/querylens/requests/{record.id}/queries/0/explain/?format=json")
    assert response.status_code == 422
    assert "redacted" in response.json()["error"]


def test_plain_queries_keep_their_parameters() -> None:
    with recorded() as result:
        list(User.objects.filter(username="someone", is_active=True))
    (query,) = result.record.queries
    assert "someone" in query.params
    assert REDACTED not in query.params


R = REDACTED


@pytest.mark.parametrize(
    ("sql", "params", "expected"),
    [
        # An INSERT maps values to columns by position, row after row.
        (
            'INSERT INTO "t" ("name", "api_token") VALUES (%s, %s), (%s, %s)',
            ("a", "s1", "b", "s2"),
            ["a", R, "b", R],
        ),
        # Every value of an IN list belongs to its column.
        ('SELECT 1 FROM "t" WHERE "t"."token" IN (%s, %s, %s)', (1, 2, 3), [R, R, R]),
        (
            'SELECT 1 FROM "t" WHERE "t"."id" IN (%s, %s) AND "t"."token" = %s',
            (1, 2, "s"),
            [1, 2, R],
        ),
        # BETWEEN's two values, a function around the column, a cast.
        ('SELECT 1 FROM "t" WHERE "secret_n" BETWEEN %s AND %s', (1, 9), [R, R]),
        ('SELECT 1 FROM "t" WHERE UPPER("t"."token"::text) = UPPER(%s)', ("s",), [R]),
        # LIMIT and OFFSET values belong to no column.
        ('SELECT 1 FROM "t" WHERE "token" = %s LIMIT %s OFFSET %s', ("s", 21, 3), [R, 21, 3]),
        # MySQL quoting; an UPDATE's SET and WHERE.
        ("UPDATE `u` SET `password` = %s, `name` = %s WHERE `id` = %s", ("h", "n", 4), [R, "n", 4]),
        # A literal "%%" is not a placeholder.
        ("SELECT 1 FROM t WHERE name LIKE '%%x' AND password = %s", ("h",), [R]),
    ],
)
def test_values_are_matched_to_their_columns(sql: str, params: Any, expected: list[Any]) -> None:
    from querylens.redaction import Redactor

    redactor = Redactor(["password", "token", "secret"], ["django_session"])
    assert redactor.params(sql, params, False) == expected


def test_named_and_executemany_parameters_are_redacted() -> None:
    from querylens.redaction import Redactor

    redactor = Redactor(["token"], [])
    named = 'SELECT 1 FROM "t" WHERE "token" = %(tok)s AND "id" = %(id)s'
    assert redactor.params(named, {"tok": "s", "id": 3}, False) == {"tok": R, "id": 3}
    many = 'INSERT INTO "t" ("id", "token") VALUES (%s, %s)'
    assert redactor.params(many, [(1, "a"), (2, "b")], True) == [[1, R], [2, R]]
