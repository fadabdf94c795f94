"""Index advice on the real plan: the right Model.field, proven with hypopg on PostgreSQL.

The orders table is big enough (tens of thousands of rows on PostgreSQL) for
the planner to really prefer a sequential scan, and has no index but the
primary key's and the foreign key's.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from django.db import DatabaseError, connections, transaction

from querylens.explain import explain_query
from querylens.records import QueryRecord
from querylens.testing import recorded
from tests.conftest import REQUIRE_SERVICES
from tests.models import Author, Order

PG_ROWS = 50_000
OTHER_ROWS = 3_000
START = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def record_of(run: Callable[[], Any], alias: str) -> QueryRecord:
    with recorded() as result:
        run()
    (query,) = [q for q in result.record.queries if q.alias == alias and "tests_order" in q.sql]
    return query


def indexes_of(alias: str) -> set[str]:
    connection = connections[alias]
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, "tests_order")
    return set(constraints)


def fill(alias: str) -> Author:
    author = Author.objects.using(alias).create(name="buyer")
    if connections[alias].vendor == "postgresql":
        with connections[alias].cursor() as cursor:
            cursor.execute(
                "INSERT INTO tests_order (status, created_at, total, author_id) "
                "SELECT CASE WHEN n %% 1000 = 0 THEN 'rare' ELSE 'paid' END, "
                "%s::timestamptz + n * interval '1 minute', n %% 97, %s "
                "FROM generate_series(1, %s) AS n",
                [START, author.pk, PG_ROWS],
            )
            cursor.execute("ANALYZE tests_order")
    else:
        Order.objects.using(alias).bulk_create(
            Order(
                status="rare" if n % 1000 == 0 else "paid",
                created_at=START + dt.timedelta(minutes=n),
                total=n % 97,
                author=author,
            )
            for n in range(OTHER_ROWS)
        )
        if connections[alias].vendor == "mysql":
            with connections[alias].cursor() as cursor:
                cursor.execute("ANALYZE TABLE tests_order")
    return author


# --- PostgreSQL, verified with hypopg ---------------------------------------------------


@pytest.fixture
def pg_orders(db: None) -> Author:
    try:
        with transaction.atomic(using="postgres"), connections["postgres"].cursor() as cursor:
            cursor.execute("CREATE EXTENSION IF NOT EXISTS hypopg")
    except DatabaseError as exc:
        message = (
            f"PostgreSQL's hypopg extension is unavailable ({exc}); on Debian: "
            "apt-get install postgresql-15-hypopg"
        )
        if REQUIRE_SERVICES:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return fill("postgres")


def explain_pg(run: Callable[[], Any]) -> Any:
    before = indexes_of("postgres")
    result = explain_query(record_of(run, "postgres"))
    assert result.error is None, result.error
    # Nothing changed: no index, no hypothetical index left in the session.
    assert indexes_of("postgres") == before
    with connections["postgres"].cursor() as cursor:
        cursor.execute("SELECT count(*) FROM hypopg_list_indexes")
        assert cursor.fetchone()[0] == 0
    assert Order.objects.using("postgres").count() == PG_ROWS
    return result


def on_postgres(test: Callable[..., None]) -> Callable[..., None]:
    """PostgreSQL's alias, with the orders table filled and hypopg installed."""
    for mark in (
        pytest.mark.usefixtures("pg_orders"),
        pytest.mark.django_db(databases=["default", "postgres"]),
        pytest.mark.postgres,
    ):
        test = mark(test)
    return test


@on_postgres
def test_an_unindexed_filter_gets_verified_advice() -> None:
    result = explain_pg(lambda: list(Order.objects.using("postgres").filter(status="rare")))
    (advice,) = result.indexes
    assert advice.model == "tests.Order"
    assert advice.fields == ["status"]
    assert advice.columns == ["status"]
    assert advice.table == "tests_order"
    assert advice.code.startswith('models.Index(fields=["status"], name="order_status_')
    assert len(advice.code.split('name="')[1].rstrip('")')) <= 30
    assert advice.verified is True
    assert advice.cost_before is not None
    assert advice.cost_after is not None
    assert advice.cost_after * 2 <= advice.cost_before
    assert "Verified with a hypothetical index" in advice.reason
    assert result.to_dict()["indexes"][0]["fields"] == ["status"]
    # The plan step it comes from carries it.
    assert any("Index advice" in w for _, node in result.plan.walk() for w in node.warnings)


@on_postgres
def test_a_composite_filter_puts_equality_before_range() -> None:
    since = START + dt.timedelta(days=20)
    result = explain_pg(
        lambda: list(Order.objects.using("postgres").filter(status="rare", created_at__gte=since))
    )
    (advice,) = result.indexes
    assert advice.fields == ["status", "created_at"]
    assert advice.verified is True


@on_postgres
def test_a_sort_feeding_a_limit_gets_an_index_on_the_sort_column() -> None:
    result = explain_pg(lambda: list(Order.objects.using("postgres").order_by("-created_at")[:10]))
    (advice,) = result.indexes
    assert advice.fields == ["created_at"]
    assert advice.verified is True


@on_postgres
def test_an_indexed_filter_and_a_foreign_key_get_none() -> None:
    author = Author.objects.using("postgres").get(name="buyer")
    assert explain_pg(lambda: list(Order.objects.using("postgres").filter(pk=7))).indexes == []
    assert (
        explain_pg(lambda: list(Order.objects.using("postgres").filter(author=author))).indexes
        == []
    )


@on_postgres
def test_without_hypopg_the_advice_says_it_is_not_verified() -> None:
    with connections["postgres"].cursor() as cursor:
        cursor.execute("DROP EXTENSION hypopg")  # inside the test's transaction
    result = explain_pg_without_hypopg()
    (advice,) = result.indexes
    assert advice.fields == ["status"]
    assert advice.verified is False
    assert (advice.cost_before, advice.cost_after) == (None, None)
    assert "hypopg" in advice.reason
    assert "CREATE EXTENSION" in advice.reason


def explain_pg_without_hypopg() -> Any:
    before = indexes_of("postgres")
    result = explain_query(
        record_of(lambda: list(Order.objects.using("postgres").filter(status="rare")), "postgres")
    )
    assert result.error is None
    assert indexes_of("postgres") == before
    return result


# --- MariaDB and SQLite, not verified ---------------------------------------------------------


@pytest.mark.parametrize(
    "alias",
    [
        pytest.param("default", marks=[pytest.mark.sqlite, pytest.mark.django_db]),
        pytest.param(
            "mariadb",
            marks=[
                pytest.mark.mariadb,
                # ANALYZE TABLE commits implicitly on MariaDB: a transactional
                # test, whose tables are emptied afterwards, keeps it contained.
                pytest.mark.django_db(transaction=True, databases=["default", "mariadb"]),
            ],
        ),
    ],
)
def test_other_vendors_map_the_scan_to_model_code_unverified(alias: str) -> None:
    author = fill(alias)
    before = indexes_of(alias)
    unindexed = explain_query(
        record_of(lambda: list(Order.objects.using(alias).filter(status="rare")), alias)
    )
    assert unindexed.error is None, unindexed.error
    (advice,) = unindexed.indexes
    assert (advice.model, advice.fields, advice.verified) == ("tests.Order", ["status"], False)
    assert advice.code.startswith('models.Index(fields=["status"]')
    assert "Not verified" in advice.reason
    since = START + dt.timedelta(days=1)
    composite = explain_query(
        record_of(
            lambda: list(Order.objects.using(alias).filter(status="rare", created_at__gte=since)),
            alias,
        )
    )
    assert [a.fields for a in composite.indexes] == [["status", "created_at"]]
    latest = explain_query(
        record_of(lambda: list(Order.objects.using(alias).order_by("-created_at")[:10]), alias)
    )
    assert [a.fields for a in latest.indexes] == [["created_at"]]
    for run in (
        lambda: list(Order.objects.using(alias).filter(pk=7)),
        lambda: list(Order.objects.using(alias).filter(author=author)),
    ):
        assert explain_query(record_of(run, alias)).indexes == []
    assert indexes_of(alias) == before
    assert Order.objects.using(alias).count() == OTHER_ROWS


@on_postgres
def test_the_explain_page_shows_the_advice_above_the_plan() -> None:
    from django.test import Client

    from querylens.storage import get_storage
    from tests.helpers import querylens_staff

    with recorded() as result:
        list(Order.objects.using("postgres").filter(status="rare"))
    record = result.record
    record.id = "indexadvice01"
    get_storage().add(record)
    client = Client()
    client.force_login(querylens_staff("tuner"))
    index = next(q.index for q in record.queries if "tests_order" in q.sql)
    html = client.post(
        f"/admin/querylens/requests/{record.id}/queries/{index}/explain/"
    ).content.decode()
    advice_at = html.index('id="ql-index-advice"')
    assert advice_at < html.index('id="ql-plan"')
    assert "models.Index(fields=[&quot;status&quot;]" in html
    assert "tests.Order.Meta.indexes" in html
    assert "verified" in html
    assert 'class=" ql-advised"' in html or 'class="ql-slowest ql-advised"' in html
    data = client.post(
        f"/admin/querylens/requests/{record.id}/queries/{index}/explain/?format=json"
    ).json()
    (advice,) = data["indexes"]
    assert set(advice) == {
        "model", "fields", "code", "table", "columns", "verified", "cost_before", "cost_after", "reason",
    }  # fmt: skip
    assert advice["verified"] is True


@on_postgres
def test_a_join_on_an_unindexed_column_gets_verified_advice() -> None:
    Author.objects.using("postgres").create(name="rare")

    def join() -> None:
        with connections["postgres"].cursor() as cursor:
            cursor.execute(
                'SELECT "tests_order"."id" FROM "tests_author" INNER JOIN "tests_order" '
                'ON ("tests_author"."name" = "tests_order"."status") '
                'WHERE "tests_author"."name" = %s',
                ["rare"],
            )
            cursor.fetchall()

    result = explain_pg(join)
    (advice,) = result.indexes
    assert (advice.model, advice.fields) == ("tests.Order", ["status"])
    assert advice.verified is True
