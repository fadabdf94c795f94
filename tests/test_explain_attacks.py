"""EXPLAIN that cannot change anything, tried as an attacker would on the real servers.

Each attack is a recorded query whose EXPLAIN ANALYZE would act outside the
always-rolled-back transaction: a session lock, a write through another
connection, another backend killed, a sequence advanced, a stored function
that writes. After each one, the test reads the server's state (locks,
rows, sequences, auto-increment, other backends) and the time it took.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import DatabaseError, connections, transaction
from django.test import Client

from querylens.explain import explain_query
from querylens.records import QueryRecord
from querylens.storage import get_storage
from querylens.testing import recorded
from tests.conftest import REQUIRE_SERVICES
from tests.helpers import querylens_staff
from tests.models import Publisher

TIMEOUT_MS = 1000
#: The answer must come within the timeout, with room for a slow machine.
DEADLINE_S = TIMEOUT_MS / 1000 + 1.5


def recorded_query(alias: str, sql: str, params: Any = None) -> QueryRecord:
    """A query as the buffer would hold it (never run here: running it is the attack)."""
    return QueryRecord(
        index=0,
        alias=alias,
        sql=sql,
        params=params,
        duration_ms=0.1,
        fingerprint="attack",
        callsite=None,
    )


def explain_within_deadline(query: QueryRecord) -> Any:
    started = time.perf_counter()
    result = explain_query(query, timeout_ms=TIMEOUT_MS)
    assert time.perf_counter() - started < DEADLINE_S
    return result


def assert_outcome(result: Any, outcome: str, reason: str) -> None:
    if outcome == "refused":
        assert result.error is not None, result
        assert result.error.startswith("This query is not explained"), result.error
        assert reason in result.error
        assert result.plan is None
    elif outcome == "planned":
        assert result.error is None, result.error
        assert result.analyzed is False
        assert result.plan is not None
        assert reason in (result.note or ""), result.note
    else:
        assert result.error is None, result.error
        assert result.analyzed is True


# --- PostgreSQL ------------------------------------------------------------------------

LOCK_KEY = 4242


@pytest.fixture
def pg() -> Iterator[dict[str, Any]]:
    """Functions, views and a sequence an attacker could call; another backend."""
    import psycopg

    connection = connections["postgres"]
    try:
        with transaction.atomic(using="postgres"), connection.cursor() as cursor:
            cursor.execute("CREATE EXTENSION IF NOT EXISTS dblink")
    except DatabaseError as exc:
        message = f"PostgreSQL's dblink extension is unavailable ({exc}); on Debian: apt-get install postgresql-contrib"
        if REQUIRE_SERVICES:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    with connection.cursor() as cursor:
        statements = [
            "CREATE SEQUENCE ql_seq",
            f"CREATE FUNCTION ql_lock_volatile() RETURNS int LANGUAGE sql VOLATILE AS "
            f"$$ SELECT 1 FROM (SELECT pg_advisory_lock({LOCK_KEY})) s $$",
            f"CREATE FUNCTION ql_lock_stable() RETURNS int LANGUAGE plpgsql STABLE AS "
            f"$$ BEGIN PERFORM pg_advisory_lock({LOCK_KEY}); RETURN 1; END $$",
            f"CREATE FUNCTION ql_exec_stable() RETURNS int LANGUAGE plpgsql STABLE AS "
            f"$$ BEGIN EXECUTE 'SELECT pg_advisory_lock({LOCK_KEY})'; RETURN 1; END $$",
            "CREATE FUNCTION ql_via_stable() RETURNS int LANGUAGE sql STABLE AS "
            "$$ SELECT ql_lock_volatile() $$",
            "CREATE VIEW ql_lock_view AS SELECT ql_lock_volatile() AS x",
            "CREATE VIEW ql_lock_view_stable AS SELECT ql_lock_stable() AS x",
            "CREATE FUNCTION ql_next() RETURNS bigint LANGUAGE sql VOLATILE AS "
            "$$ SELECT nextval('ql_seq') $$",
            "CREATE FUNCTION ql_kill_stable(target int) RETURNS boolean LANGUAGE plpgsql "
            "STABLE AS $$ BEGIN RETURN pg_terminate_backend(target); END $$",
            "CREATE FUNCTION ql_double(x bigint) RETURNS bigint LANGUAGE sql IMMUTABLE AS "
            "$$ SELECT x * 2 $$",
        ]
        for statement in statements:
            cursor.execute(statement)
    settings = connection.settings_dict
    dsn = (
        f"host={settings['HOST']} port={settings['PORT']} user={settings['USER']} "
        f"dbname={settings['NAME']}"
    )
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE FUNCTION ql_remote_write_stable() RETURNS int LANGUAGE plpgsql STABLE AS "
            f"$$ BEGIN PERFORM dblink_exec('{dsn}', 'INSERT INTO tests_publisher (name) "
            "VALUES (''written by dblink'')'); RETURN 1; END $$"
        )
    other = psycopg.connect(dsn, autocommit=True)
    pid = other.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
    try:
        yield {"dsn": dsn, "other": other, "pid": pid}
    finally:
        with contextlib.suppress(Exception):
            other.close()


def pg_state(pg: dict[str, Any]) -> dict[str, Any]:
    """What an attack could have changed beyond the rolled-back transaction."""
    with connections["postgres"].cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")
        locks = cursor.fetchone()[0]
        cursor.execute("SELECT last_value, is_called FROM ql_seq")
        sequence = cursor.fetchone()
    # A fresh connection sees what other connections committed.
    import psycopg

    with psycopg.connect(pg["dsn"], autocommit=True) as fresh:
        rows = fresh.execute("SELECT count(*) FROM tests_publisher").fetchone()
    alive = pg["other"].execute("SELECT 1").fetchone() == (1,)
    return {"locks": locks, "sequence": sequence, "rows": rows, "other backend alive": alive}


PG_ATTACKS = [
    pytest.param(
        "SELECT pg_advisory_lock(%s)", [LOCK_KEY], "refused", "pg_advisory_lock", id="lock"
    ),
    pytest.param(
        'SELECT "pg_advisory_lock"(%s)', [LOCK_KEY], "planned", "pg_advisory_lock", id="lock-quoted"
    ),
    pytest.param("SELECT ql_lock_volatile()", None, "planned", "ql_lock_volatile", id="lock-fn"),
    pytest.param(
        "SELECT ql_lock_stable()", None, "refused", "pg_advisory_lock", id="lock-stable-fn"
    ),
    pytest.param("SELECT ql_exec_stable()", None, "refused", "dynamic SQL", id="lock-execute"),
    pytest.param("SELECT ql_via_stable()", None, "refused", "ql_lock_volatile", id="lock-chain"),
    pytest.param("SELECT x FROM ql_lock_view", None, "planned", "ql_lock_volatile", id="lock-view"),
    pytest.param(
        "SELECT x FROM ql_lock_view_stable",
        None,
        "refused",
        "pg_advisory_lock",
        id="lock-view-stable",
    ),
    pytest.param(
        "SELECT dblink_exec(%s, %s)",
        lambda pg: [pg["dsn"], "INSERT INTO tests_publisher (name) VALUES ('via dblink')"],
        "refused",
        "dblink_exec",
        id="dblink",
    ),
    pytest.param("SELECT ql_remote_write_stable()", None, "refused", "dblink_exec", id="dblink-fn"),
    pytest.param(
        "SELECT pg_terminate_backend(%s)",
        lambda pg: [pg["pid"]],
        "refused",
        "pg_terminate_backend",
        id="kill",
    ),
    pytest.param(
        "SELECT ql_kill_stable(%s)",
        lambda pg: [pg["pid"]],
        "refused",
        "pg_terminate_backend",
        id="kill-fn",
    ),
    pytest.param("SELECT nextval('ql_seq')", None, "refused", "nextval", id="nextval"),
    pytest.param("SELECT ql_next()", None, "planned", "ql_next", id="nextval-fn"),
    pytest.param("SELECT pg_sleep(%s)", [30], "refused", "pg_sleep", id="sleep"),
    pytest.param(
        "SELECT ql_double(id) FROM tests_publisher WHERE name = %s",
        ["a"],
        "analyzed",
        "",
        id="clean",
    ),
]


@pytest.mark.postgres
@pytest.mark.django_db(databases=["default", "postgres"])
@pytest.mark.parametrize(("sql", "params", "outcome", "reason"), PG_ATTACKS)
def test_postgres_explain_changes_nothing_outside_the_transaction(
    pg: dict[str, Any], sql: str, params: Any, outcome: str, reason: str
) -> None:
    Publisher.objects.using("postgres").create(name="kept")
    before = pg_state(pg)
    assert before["locks"] == 0
    if callable(params):  # values known only once the fixture ran
        params = params(pg)
    result = explain_within_deadline(recorded_query("postgres", sql, params))
    assert_outcome(result, outcome, reason)
    assert pg_state(pg) == before


@pytest.mark.postgres
@pytest.mark.django_db(databases=["default", "postgres"])
def test_postgres_attack_through_the_explain_view_changes_nothing(pg: dict[str, Any]) -> None:
    before = pg_state(pg)
    with recorded() as result, connections["postgres"].cursor() as cursor:
        # Recorded harmlessly (the function is never reached), explained
        # with the WHERE turned true: what an attacker could store.
        cursor.execute("SELECT ql_lock_stable() WHERE %s", [False])
    record = result.record
    record.id = "pgattack01"
    record.queries[-1].params = [True]
    get_storage().add(record)
    client = Client()
    client.force_login(querylens_staff("attacker"))
    index = record.queries[-1].index
    response = client.post(
        f"/admin/querylens/requests/{record.id}/queries/{index}/explain/?format=json"
    )
    assert response.status_code == 422
    assert "pg_advisory_lock" in response.json()["error"]
    assert pg_state(pg) == before


# --- MariaDB ---------------------------------------------------------------------------


@pytest.fixture
def maria() -> Iterator[None]:
    """A stored function that writes, a sequence, views; DDL commits, so clean up after."""
    statements = [
        "DROP FUNCTION IF EXISTS ql_sneaky_write",
        # A lock outlives any rollback; the UPDATE shows a write getting through.
        "CREATE FUNCTION ql_sneaky_write() RETURNS INT MODIFIES SQL DATA "
        "BEGIN DO GET_LOCK('ql', 0); UPDATE tests_publisher SET name = 'written'; RETURN 1; END",
        "DROP SEQUENCE IF EXISTS ql_seq",
        "CREATE SEQUENCE ql_seq NOCACHE",
        "CREATE OR REPLACE VIEW ql_writer_view AS SELECT ql_sneaky_write() AS x",
        "CREATE OR REPLACE VIEW ql_plain_view AS SELECT id, name FROM tests_publisher",
    ]
    with connections["mariadb"].cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)
    try:
        yield
    finally:
        with connections["mariadb"].cursor() as cursor:
            for statement in (
                "DROP VIEW IF EXISTS ql_writer_view, ql_plain_view",
                "DROP SEQUENCE IF EXISTS ql_seq",
                "DROP FUNCTION IF EXISTS ql_sneaky_write",
                "DO RELEASE_ALL_LOCKS()",
            ):
                cursor.execute(statement)


def maria_state() -> dict[str, Any]:
    with connections["mariadb"].cursor() as cursor:
        cursor.execute("SELECT next_not_cached_value FROM ql_seq")
        sequence = cursor.fetchone()[0]
        cursor.execute("SELECT IS_FREE_LOCK('ql')")
        lock_free = cursor.fetchone()[0]
        cursor.execute("SHOW CREATE TABLE tests_publisher")
        create = cursor.fetchone()[1]
    rows = sorted(Publisher.objects.using("mariadb").values_list("name", flat=True))
    increment = [part for part in create.split() if part.startswith("AUTO_INCREMENT=")]
    return {"sequence": sequence, "lock free": lock_free, "rows": rows, "auto_increment": increment}


MARIA_ATTACKS = [
    pytest.param("SELECT ql_sneaky_write() FROM DUAL", None, "refused", "ql_sneaky_write", id="fn"),
    pytest.param(
        "DELETE FROM tests_publisher WHERE id = (SELECT ql_sneaky_write())",
        None,
        "refused",
        "stored function",
        id="constant-subquery",
    ),
    pytest.param("SELECT NEXT VALUE FOR ql_seq", None, "refused", "sequence", id="next-value"),
    pytest.param("SELECT NEXTVAL(ql_seq)", None, "refused", "NEXTVAL", id="nextval"),
    pytest.param(
        "SELECT id /*!, ql_sneaky_write() */ FROM tests_publisher",
        None,
        "refused",
        "executable comment",
        id="executable-comment",
    ),
    pytest.param(
        "SELECT id /*M!100000 , ql_sneaky_write() */ FROM tests_publisher",
        None,
        "refused",
        "executable comment",
        id="mariadb-comment",
    ),
    pytest.param("SELECT GET_LOCK(%s, 0)", ["ql"], "refused", "GET_LOCK", id="lock"),
    pytest.param("SELECT SLEEP(%s)", [30], "refused", "SLEEP", id="sleep"),
    pytest.param("SELECT BENCHMARK(%s, MD5('x'))", [10**9], "refused", "BENCHMARK", id="benchmark"),
    pytest.param("SELECT x FROM ql_writer_view", None, "refused", "ql_sneaky_write", id="view-fn"),
    pytest.param("SELECT id FROM ql_plain_view", None, "planned", "ql_plain_view", id="view"),
    pytest.param(
        "INSERT INTO tests_publisher (name) VALUES (%s)", ["new"], "planned", "INSERT", id="insert"
    ),
    pytest.param(
        "SELECT id FROM tests_publisher WHERE name = %s", ["kept"], "analyzed", "", id="clean"
    ),
]


@pytest.mark.mariadb
@pytest.mark.django_db(transaction=True, databases=["default", "mariadb"])
@pytest.mark.parametrize(("sql", "params", "outcome", "reason"), MARIA_ATTACKS)
@pytest.mark.parametrize(
    "in_transaction",
    # Inside a transaction (ATOMIC_REQUESTS) MariaDB cannot go read-only:
    # there, without the statement check, these attacks take the lock and
    # advance the sequence.
    [pytest.param(False, id="autocommit"), pytest.param(True, id="atomic")],
)
def test_mariadb_explain_changes_nothing_outside_the_transaction(
    maria: None, sql: str, params: Any, outcome: str, reason: str, in_transaction: bool
) -> None:
    Publisher.objects.using("mariadb").create(name="kept")
    before = maria_state()
    context = transaction.atomic(using="mariadb") if in_transaction else contextlib.nullcontext()
    with context:
        result = explain_within_deadline(recorded_query("mariadb", sql, params))
    assert_outcome(result, outcome, reason)
    assert maria_state() == before
