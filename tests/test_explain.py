"""EXPLAIN of recorded queries: what may run, on which database, and the plans.

The database tests run on the real servers: SQLite always, PostgreSQL and
MariaDB through their markers. MySQL 8 is not on this machine, so its
statements are checked against a stand-in connection.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from collections.abc import Iterator
from typing import Any

import django
import pytest
from django.db import connection, connections, transaction
from django.test import override_settings

from querylens import explain
from querylens.explain import (
    ExplainResult,
    Mode,
    PlanNode,
    Verdict,
    check_statement,
    explain_query,
    find_warnings,
    mysql,
    parse_mariadb,
    parse_mysql_tree,
    parse_postgres,
    parse_sqlite,
    postgresql,
)
from querylens.explain.base import Failure
from querylens.explain.mysql import _run_mysql
from querylens.explain.sqlite import _run_other
from querylens.records import QueryRecord
from querylens.testing import recorded
from tests.factories import make_library
from tests.models import Book, Publisher

# --- which statements may run -------------------------------------------------


@pytest.mark.parametrize(
    "sql",
    [
        'SELECT "tests_book"."id" FROM "tests_book" WHERE "tests_book"."id" = %s',
        "select 1;",
        "SELECT 1; -- trailing comment",
        "/* why */ (SELECT 1) UNION (SELECT 2)",
        "WITH recent AS (SELECT id FROM t) SELECT * FROM recent",
        "SELECT ';' AS semicolon, 'DELETE' AS word FROM t",
        'SELECT "update", "into" FROM t',
        "SELECT lo_price, nextval_count FROM t",
        "SELECT REPLACE(name, %s, %s) FROM t",
    ],
)
def test_a_single_read_only_select_may_be_analyzed(sql: str) -> None:
    verdict = check_statement(sql)
    assert verdict.mode is Mode.ANALYZE
    assert not verdict.sql.rstrip().endswith(";")


@pytest.mark.parametrize(
    ("sql", "word"),
    [
        ('UPDATE "tests_book" SET "title" = %s', "UPDATE"),
        ("INSERT INTO t (a) VALUES (%s)", "INSERT"),
        ("DELETE FROM t WHERE id = %s", "DELETE"),
        ("WITH gone AS (DELETE FROM t RETURNING id) SELECT * FROM gone", "DELETE"),
        ("SELECT * FROM t WHERE id = %s FOR UPDATE", "UPDATE"),
        ("SELECT * FROM t FOR SHARE", "SHARE"),
        ("SELECT * FROM t LOCK IN SHARE MODE", "SHARE"),
        ("SELECT * INTO copy FROM t", "INTO"),
    ],
)
def test_writes_and_row_locks_are_only_planned(sql: str, word: str) -> None:
    verdict = check_statement(sql)
    assert verdict.mode is Mode.PLAN
    assert word in verdict.reason
    assert "without ANALYZE" in verdict.reason


@pytest.mark.parametrize(
    ("sql", "reason"),
    [
        ("SELECT 1; DELETE FROM t", "more than one statement"),
        ("SELECT 1;SELECT 2", "more than one statement"),
        ("SELECT nextval('tests_book_id_seq')", "nextval()"),
        ("SELECT pg_advisory_lock(1)", "pg_advisory_lock()"),
        ("SELECT GET_LOCK('x', 1)", "GET_LOCK()"),
        ("DROP TABLE t", "not a DROP statement"),
        ("TRUNCATE t", "not a TRUNCATE statement"),
        ("SAVEPOINT s1", "not a SAVEPOINT statement"),
        ("SET search_path TO x", "not a SET statement"),
        ("VACUUM", "not a VACUUM statement"),
        ("garbage", "not this kind of statement"),
    ],
)
def test_anything_else_is_refused_with_a_reason(sql: str, reason: str) -> None:
    verdict = check_statement(sql)
    assert verdict.mode is Mode.REFUSE
    assert reason in verdict.reason


def test_executemany_is_refused() -> None:
    verdict = check_statement("UPDATE t SET a = %s", many=True)
    assert verdict.mode is Mode.REFUSE
    assert "executemany" in verdict.reason


# --- plans parsed into trees ------------------------------------------------------

PG_PLAN = [
    {
        "Plan": {
            "Node Type": "Nested Loop",
            "Join Type": "Left",
            "Startup Cost": 0.0,
            "Total Cost": 250.5,
            "Plan Rows": 5,
            "Plan Width": 40,
            "Actual Startup Time": 0.02,
            "Actual Total Time": 30.0,
            "Actual Rows": 12000,
            "Actual Loops": 1,
            "Plans": [
                {
                    "Node Type": "Seq Scan",
                    "Relation Name": "shop_book",
                    "Alias": "b",
                    "Plan Rows": 5,
                    "Startup Cost": 0.0,
                    "Total Cost": 200.0,
                    "Plan Width": 20,
                    "Actual Startup Time": 0.01,
                    "Actual Total Time": 25.0,
                    "Actual Rows": 12000,
                    "Actual Loops": 1,
                    "Filter": "(title <> ''::text)",
                    "Rows Removed by Filter": 3000,
                    "Shared Hit Blocks": 90,
                    "Shared Read Blocks": 7,
                },
                {
                    "Node Type": "Index Scan",
                    "Index Name": "shop_author_pkey",
                    "Relation Name": "shop_author",
                    "Alias": "shop_author",
                    "Plan Rows": 1,
                    "Startup Cost": 0.1,
                    "Total Cost": 0.2,
                    "Plan Width": 20,
                    "Actual Startup Time": 0.0001,
                    "Actual Total Time": 0.0002,
                    "Actual Rows": 1,
                    "Actual Loops": 12000,
                    "Index Cond": "(id = b.author_id)",
                    "Rows Removed by Index Recheck": 0,
                },
            ],
        },
        "Planning Time": 0.25,
        "Execution Time": 30.5,
    }
]


def test_postgres_json_becomes_a_tree_with_times_and_rows() -> None:
    root, text = parse_postgres(json.dumps(PG_PLAN))
    assert root.label == "Nested Loop Left Join"
    scan, lookup = root.children
    assert scan.label == "Seq Scan on shop_book b"
    assert (scan.estimated_rows, scan.actual_rows, scan.loops) == (5, 12000, 1)
    assert scan.details == [
        "Filter: (title <> ''::text)",
        "Rows Removed by Filter: 3000",
        "Buffers: shared hit=90 read=7",
    ]
    assert scan.rows_read == 15000
    assert lookup.label == "Index Scan using shop_author_pkey on shop_author"
    assert lookup.time_ms == 2.4  # 0.0002 ms x 12000 loops
    assert root.time_ms == 30.0
    assert root.self_ms == pytest.approx(30.0 - 25.0 - 2.4)
    lines = text.splitlines()
    assert lines[0].startswith("Nested Loop Left Join  (cost=0.00..250.50 rows=5 width=40)")
    assert "(actual time=0.020..30.000 rows=12000 loops=1)" in lines[0]
    assert lines[1].lstrip().startswith("->  Seq Scan on shop_book b")
    assert lines[-2:] == ["Planning Time: 0.250 ms", "Execution Time: 30.500 ms"]


def test_postgres_warnings_name_the_slow_step_big_scan_and_bad_estimates() -> None:
    root, _ = parse_postgres(PG_PLAN)
    warnings = find_warnings(root, analyzed=True)
    scan = root.children[0]
    assert scan.slowest
    assert warnings == [
        "Slowest step: Seq Scan on shop_book b, 25.000 ms of 30.000 ms (83%).",
        "Full scan of shop_book read 15,000 rows: an index on the filtered or joined columns may help.",
        "Row estimate off by 2,400x at Seq Scan on shop_book b: planned 5 rows, got 12,000; "
        "stale or missing statistics? Run ANALYZE on shop_book.",
    ]
    # The join above inherits the scan's error: not flagged again.
    assert root.warnings == []
    # The index lookup's estimate was right: no warning for it.
    assert root.children[1].warnings == []
    assert scan.warnings[0] == "Slowest step: 83% of the time."


def test_a_join_misjudged_over_well_estimated_inputs_is_flagged_itself() -> None:
    def scan(name: str) -> dict[str, Any]:
        return {
            "Node Type": "Seq Scan",
            "Relation Name": name,
            "Plan Rows": 100,
            "Actual Rows": 100,
            "Actual Loops": 1,
            "Actual Total Time": 0.1,
        }

    join = {
        "Node Type": "Hash Join",
        "Join Type": "Inner",
        "Plan Rows": 1,
        "Actual Rows": 5000,
        "Actual Loops": 1,
        "Actual Total Time": 9.0,
        "Plans": [scan("a"), scan("b")],
    }
    root, _ = parse_postgres([{"Plan": join}])
    warnings = find_warnings(root, analyzed=True)
    assert warnings[-1] == (
        "Row estimate off by 5,000x at Hash Join: planned 1 rows, got 5,000; "
        "the planner misjudged this step (stale statistics or correlated columns)."
    )
    assert root.warnings == ["Slowest step: 98% of the time.", "Row estimate off by 5,000x."]


def test_postgres_labels_read_like_postgres_text() -> None:
    never = {
        "Node Type": "Seq Scan",
        "Relation Name": "t",
        "Plan Rows": 1,
        "Actual Loops": 0,
        "Total Cost": 1.0,
        "Startup Cost": 0.0,
        "Plan Width": 4,
    }
    plans = [
        {"Node Type": "Aggregate", "Strategy": "Hashed", "Group Key": ["a", "b"]},
        {
            "Node Type": "Index Scan",
            "Scan Direction": "Backward",
            "Index Name": "t_pkey",
            "Relation Name": "t",
        },
        {"Node Type": "CTE Scan", "CTE Name": "recent", "Alias": "recent"},
        {"Node Type": "Hash Join", "Join Type": "Right"},
        {"Node Type": "Bitmap Index Scan", "Index Name": "t_idx"},
        {"Node Type": "ModifyTable", "Operation": "Delete", "Relation Name": "t"},
    ]
    root, text = parse_postgres([{"Plan": {"Node Type": "Append", "Plans": [*plans, never]}}])
    assert [child.label for child in root.children] == [
        "HashAggregate",
        "Index Scan Backward using t_pkey on t",
        "CTE Scan on recent",
        "Hash Right Join",
        "Bitmap Index Scan on t_idx",
        "Delete on t",
        "Seq Scan on t",
    ]
    assert root.children[0].details == ["Group Key: a, b"]
    assert "Seq Scan on t  (cost=0.00..1.00 rows=1 width=4) (never executed)" in text
    assert root.children[-1].rows_read == 1  # the estimate, as it never ran


def test_a_vendor_that_cannot_explain_gives_its_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    def cannot(*args: Any) -> None:
        raise Failure("EXPLAIN is not supported on Oracle.")

    monkeypatch.setitem(explain._RUNNERS, explain._vendor(connection), cannot)
    query = QueryRecord(
        index=0,
        alias="default",
        sql="SELECT %s",
        params=7,
        duration_ms=1.0,
        fingerprint="x",
        callsite=None,
    )
    assert explain_query(query).error == "EXPLAIN is not supported on Oracle."


def test_small_plans_get_no_warnings() -> None:
    plan = {
        "Plan": {
            "Node Type": "Result",
            "Plan Rows": 1,
            "Actual Rows": 1,
            "Actual Loops": 1,
            "Actual Total Time": 0.01,
        }
    }
    root, _ = parse_postgres([plan])
    assert find_warnings(root, analyzed=True) == []


def test_a_fast_slowest_step_is_not_pointed_out() -> None:
    # An index lookup of 0.05 ms under a 0.06 ms query: the slowest step, and
    # nothing to act on.
    plan = {
        "Plan": {
            "Node Type": "Limit",
            "Plan Rows": 1,
            "Actual Rows": 1,
            "Actual Loops": 1,
            "Actual Total Time": 0.06,
            "Plans": [
                {
                    "Node Type": "Index Scan",
                    "Relation Name": "tests_book",
                    "Index Name": "tests_book_pkey",
                    "Plan Rows": 1,
                    "Actual Rows": 1,
                    "Actual Loops": 1,
                    "Actual Total Time": 0.05,
                }
            ],
        }
    }
    root, _ = parse_postgres([plan])
    assert find_warnings(root, analyzed=True) == []
    assert not any(node.slowest for _, node in root.walk())


def test_a_plan_only_estimate_warns_about_expected_big_scans() -> None:
    plan = {
        "Plan": {
            "Node Type": "Seq Scan",
            "Relation Name": "big",
            "Plan Rows": 50000,
            "Total Cost": 9.0,
        }
    }
    root, text = parse_postgres([plan])
    assert root.time_ms is None
    assert find_warnings(root, analyzed=False) == [
        "Full scan of big is expected to read 50,000 rows: an index on the filtered or joined columns may help."
    ]
    assert "actual" not in text


MARIADB_PLAN = {
    "query_optimization": {"r_total_time_ms": 0.09},
    "query_block": {
        "select_id": 1,
        "r_loops": 1,
        "r_total_time_ms": 40.0,
        "filesort": {
            "sort_key": "b.title",
            "r_loops": 1,
            "r_total_time_ms": 4.0,
            "temporary_table": {
                "nested_loop": [
                    {
                        "table": {
                            "table_name": "b",
                            "access_type": "ALL",
                            "r_loops": 1,
                            "rows": 100,
                            "r_rows": 20000,
                            "r_table_time_ms": 30.0,
                            "r_other_time_ms": 1.0,
                            "filtered": 100,
                            "r_filtered": 50,
                            "attached_condition": "b.title like 'A%'",
                            "r_engine_stats": {"pages_accessed": 30},
                        }
                    },
                    {
                        "table": {
                            "table_name": "a",
                            "access_type": "eq_ref",
                            "key": "PRIMARY",
                            "ref": ["db.b.author_id"],
                            "r_loops": 10000,
                            "rows": 1,
                            "r_rows": 1,
                            "r_table_time_ms": 3.0,
                            "r_other_time_ms": 0.5,
                            "filtered": 100,
                            "r_filtered": 100,
                        }
                    },
                ]
            },
        },
        "subqueries": [{"query_block": {"select_id": 2, "table": {"message": "No tables used"}}}],
    },
}


def test_mariadb_json_becomes_a_tree() -> None:
    root = parse_mariadb(json.dumps(MARIADB_PLAN))
    assert root.label == "Query block #1"
    sort = root.children[0]
    assert sort.label == "Sort"
    assert sort.details == ["sort_key: b.title"]
    nested = sort.children[0].children[0]
    assert nested.label == "Nested loop"
    scan, lookup = nested.children
    assert scan.label == "Full scan on b"
    assert (scan.estimated_rows, scan.actual_rows, scan.time_ms) == (100, 20000, 31.0)
    assert scan.details == [
        "attached_condition: b.title like 'A%'",
        "filtered: 100% planned, 50.0% actual",
    ]
    assert lookup.label == "Unique index lookup on a using PRIMARY"
    assert lookup.details[0] == "ref: db.b.author_id"
    assert root.children[1].label == "Subqueries"
    assert root.children[1].children[0].children[0].label == "No tables used"
    # A sort's time is its own work; the block's total covers everything.
    assert (scan.self_ms, sort.self_ms, sort.time_ms, root.time_ms, root.self_ms) == (
        31.0,
        4.0,
        38.5,
        40.0,
        1.5,
    )
    warnings = find_warnings(root, analyzed=True)
    assert warnings[0].startswith("Slowest step: Full scan on b, 31.000 ms of 40.000 ms (78%)")
    assert "Full scan of b read 20,000 rows" in warnings[1]
    assert warnings[2].startswith("Row estimate off by 200x at Full scan on b")


MYSQL_TREE = """\
-> Nested loop inner join  (cost=4.95 rows=9) (actual time=0.153..42.000 rows=9 loops=1)
    -> Filter: (b.author_id is not null)  (cost=2.95 rows=9) (actual time=0.0826..30.5 rows=20000 loops=1)
        -> Table scan on b  (cost=2.95 rows=9) (actual time=0.0818..30.0 rows=20000 loops=1)
    -> Single-row index lookup on a using PRIMARY (id=b.author_id)  (cost=0.25 rows=1) (actual time=0.001..0.001 rows=1 loops=9)
"""


def test_mysql_explain_analyze_text_becomes_a_tree() -> None:
    root = parse_mysql_tree(MYSQL_TREE)
    assert root.label == "Nested loop inner join"
    flt, lookup = root.children
    scan = flt.children[0]
    assert scan.label == "Table scan on b"
    assert (scan.relation, scan.estimated_rows, scan.actual_rows, scan.time_ms) == (
        "b",
        9,
        20000,
        30.0,
    )
    assert scan.full_scan
    assert scan.rows_read == 20000
    assert lookup.relation == "a"
    assert lookup.time_ms == 0.009
    assert flt.self_ms == 0.5
    warnings = find_warnings(root, analyzed=True)
    assert warnings[0].startswith("Slowest step: Table scan on b, 30.000 ms of 42.000 ms")
    assert any("Full scan of b read 20,000 rows" in w for w in warnings)


def test_mysql_tree_without_actuals_and_with_several_roots() -> None:
    root = parse_mysql_tree("-> Table scan on t  (rows=3)\n-> Table scan on u  (rows=4)\n")
    assert root.label == "Query"
    assert [(c.label, c.estimated_rows, c.rows_read) for c in root.children] == [
        ("Table scan on t", 3, 3),
        ("Table scan on u", 4, 4),
    ]


def test_sqlite_rows_become_a_tree_and_cli_like_text() -> None:
    rows = [
        (2, 0, 0, "SCAN tests_book"),
        (5, 0, 0, "SEARCH tests_author USING INTEGER PRIMARY KEY (rowid=?)"),
        (9, 0, 0, "CORRELATED SCALAR SUBQUERY 1"),
        (12, 9, 0, "SCAN tests_tag USING COVERING INDEX idx"),
    ]
    root, text = parse_sqlite(rows)
    assert [c.label for c in root.children] == [row[3] for row in rows[:3]]
    assert root.children[0].full_scan
    assert not root.children[2].children[0].full_scan
    assert root.children[1].relation == "tests_author"
    assert text == (
        "QUERY PLAN\n"
        "|--SCAN tests_book\n"
        "|--SEARCH tests_author USING INTEGER PRIMARY KEY (rowid=?)\n"
        "`--CORRELATED SCALAR SUBQUERY 1\n"
        "   `--SCAN tests_tag USING COVERING INDEX idx"
    )


def test_result_json_has_the_documented_keys() -> None:
    result = ExplainResult(
        vendor="sqlite", plan=PlanNode(label="QUERY PLAN", children=[PlanNode(label="SCAN t")])
    )
    data = result.to_dict()
    assert {"vendor", "analyzed", "plan_text", "plan", "warnings"} <= set(data)
    assert data["plan"]["children"][0]["label"] == "SCAN t"
    json.dumps(data)


# --- running on the databases ---------------------------------------------------


def record_of(run: Any, alias: str, kind: str = "") -> QueryRecord:
    """The last query ``run()`` sends to ``alias`` (starting with ``kind``), as the buffer keeps it."""
    with recorded() as result:
        run()
    queries = [q for q in result.record.queries if q.alias == alias and q.sql.startswith(kind)]
    assert queries, "nothing ran"
    return queries[-1]


def recorded_write(alias: str, book: Book) -> QueryRecord:
    """A recorded UPDATE of ``book`` whose effect is rolled back right away."""

    def run() -> None:
        with transaction.atomic(using=alias):
            Book.objects.using(alias).filter(pk=book.pk).update(title="changed by EXPLAIN")
            transaction.set_rollback(True, using=alias)

    return record_of(run, alias, "UPDATE")


@pytest.mark.sqlite
@pytest.mark.django_db
def test_sqlite_select_shows_the_query_plan_not_analyzed() -> None:
    make_library()
    query = record_of(lambda: list(Book.objects.filter(title="Book 0.0")), "default")
    result = explain_query(query)
    assert result.error is None
    assert (result.vendor, result.analyzed, result.alias) == ("sqlite", False, "default")
    assert result.plan is not None
    assert result.plan.children[0].label == "SCAN tests_book"
    assert result.plan_text == "QUERY PLAN\n`--SCAN tests_book"
    assert "without running" in (result.note or "")


@pytest.mark.django_db
def test_a_write_on_the_default_alias_is_planned_and_the_row_is_unchanged() -> None:
    [book, *_] = make_library()
    query = recorded_write("default", book)
    result = explain_query(query)
    assert result.error is None
    assert result.analyzed is False
    assert "UPDATE statements are explained without ANALYZE" in (result.note or "")
    book.refresh_from_db()
    assert book.title == "Book 0.0"


@pytest.mark.django_db
def test_params_not_recorded_is_said_plainly() -> None:
    make_library()
    query = record_of(lambda: Book.objects.filter(pk=1).first(), "default")
    result = explain_query(dataclasses.replace(query, params=None))
    assert result.plan is None
    assert result.error is not None
    assert "parameters were not recorded (QUERYLENS['RECORD_PARAMS'] is off)" in result.error


@pytest.mark.django_db
def test_a_query_without_placeholders_runs_without_params() -> None:
    def run() -> None:
        with connections["default"].cursor() as cursor:
            cursor.execute("SELECT COUNT(*) FROM tests_book WHERE title LIKE 'B%'")

    query = record_of(run, "default")
    assert query.params is None
    result = explain_query(query)
    assert result.error is None
    assert "tests_book" in result.plan_text


@pytest.mark.django_db
def test_a_refused_statement_never_reaches_the_database(django_assert_num_queries: Any) -> None:
    query = QueryRecord(
        index=0,
        alias="default",
        sql="DELETE FROM tests_book; DROP TABLE tests_book",
        params=None,
        duration_ms=1.0,
        fingerprint="x",
        callsite=None,
    )
    with django_assert_num_queries(0):
        result = explain_query(query)
    assert result.error == "This query is not explained: It holds more than one statement."
    assert Book.objects.count() == 0  # the table still exists


def test_an_unknown_alias_is_a_message() -> None:
    query = QueryRecord(
        index=0,
        alias="gone",
        sql="SELECT 1",
        params=[],
        duration_ms=1.0,
        fingerprint="x",
        callsite=None,
    )
    result = explain_query(query)
    assert result.error == "The database alias 'gone' is not configured here."


@pytest.mark.django_db
def test_a_database_error_is_a_message(caplog: pytest.LogCaptureFixture) -> None:
    query = QueryRecord(
        index=0,
        alias="default",
        sql="SELECT * FROM no_such_table WHERE id = %s",
        params=[1],
        duration_ms=1.0,
        fingerprint="x",
        callsite=None,
    )
    result = explain_query(query)
    assert result.error is not None
    assert result.error.startswith("EXPLAIN failed: ")
    assert "no_such_table" in result.error
    # Expected failures are the user's business, not a querylens bug.
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
    # The connection is still usable afterwards.
    assert Book.objects.count() == 0


@pytest.mark.django_db
def test_an_unexpected_failure_is_a_message_and_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: Any) -> None:
        raise RuntimeError("parser exploded")

    monkeypatch.setitem(explain._RUNNERS, explain._vendor(connection), broken)
    query = QueryRecord(
        index=3,
        alias="default",
        sql="SELECT 1",
        params=[],
        duration_ms=1.0,
        fingerprint="x",
        callsite=None,
    )
    result = explain_query(query)
    assert result.error == "EXPLAIN failed: RuntimeError: parser exploded"
    assert "could not explain query 3" in caplog.text


# --- PostgreSQL -----------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(databases=["default", "postgres"])
def test_postgres_select_is_analyzed_read_only_on_its_own_alias() -> None:
    make_library(using="postgres")
    query = record_of(
        lambda: list(
            Book.objects.using("postgres").select_related("author").filter(title__startswith="Book")
        ),
        "postgres",
    )
    result = explain_query(query)
    assert result.error is None
    assert (result.vendor, result.analyzed, result.read_only, result.alias) == (
        "postgresql",
        True,
        True,
        "postgres",
    )
    assert result.plan is not None
    labels = [node.label for _, node in result.plan.walk()]
    assert any("tests_book" in label for label in labels)
    assert any("tests_author" in label for label in labels)
    assert all(node.actual_rows is not None for _, node in result.plan.walk())
    assert result.plan.time_ms is not None
    assert "Execution Time:" in result.plan_text
    data = result.to_dict()
    assert data["plan"]["label"] == result.plan.label
    # The settings were local to the rolled-back savepoint.
    with connections["postgres"].cursor() as cursor:
        cursor.execute("SHOW transaction_read_only")
        assert cursor.fetchone()[0] == "off"
        cursor.execute("SHOW statement_timeout")
        assert cursor.fetchone()[0] == "0"


@pytest.mark.postgres
@pytest.mark.django_db(databases=["default", "postgres"])
def test_postgres_write_is_not_analyzed_and_the_row_is_unchanged() -> None:
    [book, *_] = make_library(using="postgres")
    query = recorded_write("postgres", book)
    result = explain_query(query)
    assert result.error is None
    assert result.analyzed is False
    assert result.plan is not None
    assert result.plan.label == "Update on tests_book"
    assert result.plan.actual_rows is None
    assert Book.objects.using("postgres").get(pk=book.pk).title == "Book 0.0"


@pytest.mark.postgres
@pytest.mark.django_db(databases=["default", "postgres"])
def test_postgres_read_only_transaction_stops_a_select_that_writes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The second line of defence: with the function check (tested on its own
    # below) out of the way, the read-only transaction still stops the write.
    monkeypatch.setattr(postgresql, "check_calls", lambda *args, **kwargs: None)
    [book, *_] = make_library(using="postgres")
    with connections["postgres"].cursor() as cursor:
        cursor.execute(
            "CREATE FUNCTION ql_sneaky_write() RETURNS integer AS "
            "$$ UPDATE tests_book SET title = 'written'; SELECT 1 $$ LANGUAGE sql"
        )

    def run() -> None:
        with connections["postgres"].cursor() as cursor:
            cursor.execute("SELECT ql_sneaky_write() WHERE %s", [False])

    query = record_of(run, "postgres")
    result = explain_query(dataclasses.replace(query, params=[True]))
    assert result.error is not None
    assert "read-only transaction" in result.error
    assert Book.objects.using("postgres").get(pk=book.pk).title == "Book 0.0"


_TIMEOUT = "EXPLAIN was stopped by the 200 ms timeout"
#: Slow with a large parameter (a billion rows at 1000), and calling nothing
#: that ANALYZE must not run. MariaDB stops a recursion at 1000 steps.
_SLOW = (
    "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < %s) "
    "SELECT COUNT(*) FROM r a, r b, r c WHERE a.n + b.n > c.n"
)


@pytest.mark.parametrize(
    ("alias", "sleep", "start", "detail"),
    [
        pytest.param(
            "postgres",
            _SLOW,
            f"{_TIMEOUT} (QUERYLENS['EXPLAIN_TIMEOUT_MS'])",
            "EXPLAIN_TIMEOUT_MS",
            marks=[pytest.mark.postgres, pytest.mark.django_db(databases=["default", "postgres"])],
            id="postgres",
        ),
        pytest.param(
            "mariadb",
            _SLOW,
            _TIMEOUT,
            "max_statement_time",
            marks=[pytest.mark.mariadb, pytest.mark.django_db(databases=["default", "mariadb"])],
            id="mariadb",
        ),
    ],
)
def test_timeout_stops_a_slow_query_with_a_message(
    alias: str, sleep: str, start: str, detail: str
) -> None:
    def run() -> None:
        with connections[alias].cursor() as cursor:
            cursor.execute(sleep, [1])

    query = dataclasses.replace(record_of(run, alias), params=[1000])
    started = time.perf_counter()
    with override_settings(QUERYLENS={"EXPLAIN_TIMEOUT_MS": 200}):
        result = explain_query(query)
    assert time.perf_counter() - started < 2.5
    assert result.error is not None
    assert result.error.startswith(start)
    assert detail in result.error
    assert Publisher.objects.using(alias).count() == 0  # the connection still works


@pytest.mark.postgres
@pytest.mark.django_db(databases=["default", "postgres"])
def test_postgres_warns_about_a_sequential_scan_of_a_large_table() -> None:
    Publisher.objects.using("postgres").bulk_create(
        Publisher(name=f"Publisher {i}") for i in range(12_000)
    )
    query = record_of(
        lambda: list(Publisher.objects.using("postgres").filter(name="Publisher 11999")), "postgres"
    )
    result = explain_query(query)
    assert result.analyzed
    assert any(
        w.startswith("Full scan of tests_publisher read 12,000 rows") for w in result.warnings
    ), result.warnings


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, databases=["default", "postgres"])
def test_postgres_outside_any_transaction_rolls_back_too() -> None:
    [book, *_] = make_library(using="postgres")
    query = record_of(lambda: Book.objects.using("postgres").get(pk=book.pk), "postgres")
    connection = connections["postgres"]
    assert not connection.in_atomic_block
    result = explain_query(query)
    assert (result.error, result.analyzed, result.read_only) == (None, True, True)
    assert connection.get_autocommit()
    assert not connection.in_atomic_block


# --- MariaDB ----------------------------------------------------------------------------


@pytest.mark.mariadb
@pytest.mark.django_db(databases=["default", "mariadb"])
def test_mariadb_select_is_analyzed_on_its_own_alias() -> None:
    make_library(using="mariadb")
    query = record_of(
        lambda: list(
            Book.objects.using("mariadb").select_related("author").filter(title__startswith="Book")
        ),
        "mariadb",
    )
    result = explain_query(query)
    assert result.error is None
    assert (result.vendor, result.analyzed, result.alias) == ("mariadb", True, "mariadb")
    # Inside the test's transaction MariaDB cannot switch to read-only.
    assert result.read_only is False
    assert result.plan is not None
    tables = {node.relation for _, node in result.plan.walk() if node.relation}
    assert tables == {"tests_book", "tests_author"}
    assert any(node.actual_rows for _, node in result.plan.walk())
    assert json.loads(result.plan_text)["query_block"]["r_loops"] == 1


@pytest.mark.mariadb
@pytest.mark.django_db(databases=["default", "mariadb"])
def test_mariadb_write_is_not_analyzed_and_the_row_is_unchanged() -> None:
    [book, *_] = make_library(using="mariadb")
    query = recorded_write("mariadb", book)
    result = explain_query(query)
    assert result.error is None
    assert result.analyzed is False
    assert "UPDATE statements are explained without ANALYZE" in (result.note or "")
    assert Book.objects.using("mariadb").get(pk=book.pk).title == "Book 0.0"


@contextlib.contextmanager
def mariadb_function(body: str) -> Iterator[None]:
    with connections["mariadb"].cursor() as cursor:
        cursor.execute("DROP FUNCTION IF EXISTS ql_sneaky_write")
        cursor.execute(
            f"CREATE FUNCTION ql_sneaky_write() RETURNS INT MODIFIES SQL DATA BEGIN {body}; RETURN 1; END"
        )
    try:
        yield
    finally:
        with connections["mariadb"].cursor() as cursor:
            cursor.execute("DROP FUNCTION IF EXISTS ql_sneaky_write")


@pytest.mark.mariadb
@pytest.mark.django_db(transaction=True, databases=["default", "mariadb"])
def test_mariadb_outside_a_transaction_is_read_only_and_stops_a_select_that_writes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The second line of defence, with the statement check (tested on its own
    # below) out of the way.
    monkeypatch.setattr(mysql, "check_mysql_statement", lambda *args: None)
    [book, *_] = make_library(using="mariadb")
    with mariadb_function("UPDATE tests_book SET title = 'written'"):

        def run() -> None:
            with connections["mariadb"].cursor() as cursor:
                cursor.execute("SELECT ql_sneaky_write() FROM DUAL WHERE %s", [False])

        query = dataclasses.replace(record_of(run, "mariadb"), params=[True])
        assert not connections["mariadb"].in_atomic_block
        result = explain_query(query)
    assert result.error is not None
    assert "Cannot execute statement in a READ ONLY transaction" in result.error
    assert Book.objects.using("mariadb").get(pk=book.pk).title == "Book 0.0"
    plain = explain_query(
        record_of(lambda: Book.objects.using("mariadb").get(pk=book.pk), "mariadb")
    )
    assert (plain.error, plain.analyzed, plain.read_only) == (None, True, True)
    assert connections["mariadb"].get_autocommit()


@pytest.mark.mariadb
@pytest.mark.django_db(transaction=True, databases=["default", "mariadb"])
def test_mariadb_inside_a_transaction_a_writing_select_is_rolled_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(mysql, "check_mysql_statement", lambda *args: None)
    [book, *_] = make_library(using="mariadb")
    with mariadb_function("UPDATE tests_book SET title = 'written'"):

        def run() -> None:
            with connections["mariadb"].cursor() as cursor:
                cursor.execute("SELECT ql_sneaky_write() FROM DUAL WHERE %s", [False])

        query = dataclasses.replace(record_of(run, "mariadb"), params=[True])
        with transaction.atomic(using="mariadb"):
            result = explain_query(query)
            # Read-only is impossible here; the savepoint rollback undid it.
            assert (result.error, result.analyzed, result.read_only) == (None, True, False)
            assert Book.objects.using("mariadb").get(pk=book.pk).title == "Book 0.0"
    assert Book.objects.using("mariadb").get(pk=book.pk).title == "Book 0.0"


# --- MySQL 8 and other vendors, through stand-ins ---------------------------------------


class StandInCursor:
    def __init__(self, connection: StandInConnection) -> None:
        self.connection = connection
        self.row: tuple[Any, ...] = ()

    def __enter__(self) -> StandInCursor:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def execute(self, sql: str, params: Any = None) -> None:
        self.connection.sent.append(sql)
        if sql.startswith("SELECT @@SESSION.max_execution_time"):
            self.row = (7,)
        elif sql.startswith("EXPLAIN ANALYZE"):
            if self.connection.fail:
                raise RuntimeError("boom")
            self.row = (MYSQL_TREE,)
        elif sql.startswith("EXPLAIN FORMAT=TREE"):
            self.row = ("-> Table scan on b  (cost=2.95 rows=9)\n",)

    def fetchone(self) -> tuple[Any, ...]:
        return self.row

    def fetchall(self) -> list[tuple[Any, ...]]:
        return [("Seq", "Scan"), ("on", "t")]


@dataclasses.dataclass
class StandInConnection:
    vendor: str = "mysql"
    mysql_version: tuple[int, int, int] = (8, 0, 36)
    mysql_is_mariadb: bool = False
    alias: str = "default"  # transaction.atomic() runs on the real SQLite alias
    in_atomic_block: bool = False
    fail: bool = False
    sent: list[str] = dataclasses.field(default_factory=list)
    display_name: str = "Oracle"
    features: Any = None
    ops: Any = None

    def get_autocommit(self) -> bool:
        return True

    def cursor(self) -> StandInCursor:
        return StandInCursor(self)

    def __post_init__(self) -> None:
        # Django's own MySQL features and operations, reading this stand-in's
        # version, decide what the runner may send.
        from django.db.backends.mysql.features import DatabaseFeatures
        from django.db.backends.mysql.operations import DatabaseOperations

        self.features = DatabaseFeatures(self)
        self.ops = DatabaseOperations(self)


@pytest.mark.django_db
def test_mysql_8_is_analyzed_read_only_with_a_timeout_restored_afterwards() -> None:
    connection = StandInConnection()
    result = ExplainResult(vendor="mysql")
    _run_mysql(connection, Verdict(Mode.ANALYZE, "SELECT 1"), [], 300, result)
    assert connection.sent == [
        "SET TRANSACTION READ ONLY",
        "SELECT @@SESSION.max_execution_time",
        "SET SESSION max_execution_time = 300",
        "EXPLAIN ANALYZE SELECT 1",
        "SET SESSION max_execution_time = 7",
    ]
    assert (result.analyzed, result.read_only) == (True, True)
    assert result.plan is not None
    assert result.plan.label == "Nested loop inner join"


@pytest.mark.django_db
def test_mysql_timeout_is_restored_even_when_explain_fails() -> None:
    connection = StandInConnection(fail=True, in_atomic_block=True)
    with pytest.raises(RuntimeError):
        _run_mysql(
            connection, Verdict(Mode.ANALYZE, "SELECT 1"), [], 300, ExplainResult(vendor="mysql")
        )
    assert (
        connection.sent[0] == "SELECT @@SESSION.max_execution_time"
    )  # no read-only inside a transaction
    assert connection.sent[-1] == "SET SESSION max_execution_time = 7"


@pytest.mark.skipif(
    django.VERSION >= (6, 1),
    reason="Django 6.1 supports MySQL 8.4+ only, which always has EXPLAIN ANALYZE and FORMAT=TREE",
)
@pytest.mark.django_db
def test_older_mysql_plans_with_format_tree_or_says_what_it_needs() -> None:
    connection = StandInConnection(mysql_version=(8, 0, 17))
    result = ExplainResult(vendor="mysql")
    _run_mysql(connection, Verdict(Mode.ANALYZE, "SELECT 1"), [], 300, result)
    assert "EXPLAIN FORMAT=TREE SELECT 1" in connection.sent
    assert result.analyzed is False
    assert result.note == "Not analyzed: EXPLAIN ANALYZE needs MySQL 8.0.18 or later."
    with pytest.raises(Failure, match=r"needs MySQL 8\.0\.16 or later"):
        _run_mysql(
            StandInConnection(mysql_version=(5, 7, 0)),
            Verdict(Mode.PLAN, "UPDATE t SET a = 1"),
            [],
            300,
            result,
        )


@pytest.mark.django_db
def test_other_vendors_get_a_plain_explain_or_a_clear_message() -> None:
    class Features:
        supports_explaining_query_execution = True

    class Ops:
        def explain_query_prefix(self) -> str:
            return "EXPLAIN PLAN FOR"

    connection = StandInConnection(vendor="oracle")
    connection.features = Features()
    connection.ops = Ops()
    result = ExplainResult(vendor="oracle")
    _run_other(connection, Verdict(Mode.ANALYZE, "SELECT 1"), [], 300, result)
    assert connection.sent == ["EXPLAIN PLAN FOR SELECT 1"]
    assert result.plan_text == "Seq Scan\non t"
    assert result.note == "Not analyzed: querylens runs a plain EXPLAIN on Oracle."
    Features.supports_explaining_query_execution = False
    with pytest.raises(Failure, match=r"EXPLAIN is not supported on Oracle\."):
        _run_other(connection, Verdict(Mode.ANALYZE, "SELECT 1"), [], 300, result)
