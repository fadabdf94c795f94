"""EXPLAIN (ANALYZE) of a recorded query, run safely, parsed into a tree.

Only a query recorded in the buffer is ever explained, with its recorded
parameters, on the connection of the alias it ran on; nothing a client sends
becomes SQL. The rules, each enforced here:

* ANALYZE (which runs the statement) only for one ``SELECT`` or
  ``WITH ... SELECT`` statement that neither writes, locks rows nor calls a
  function with effects outside the transaction;
* ``INSERT``/``UPDATE``/``DELETE`` (and selects that write or lock) are
  explained without ANALYZE, which plans them without running them;
  anything else is refused;
* always inside a transaction (or savepoint) that is rolled back, read-only
  where the database allows it, with a statement timeout of
  ``EXPLAIN_TIMEOUT_MS``;
* a database error or a timeout becomes a message, never an exception.

Vendors: PostgreSQL ``EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)``, MariaDB
``ANALYZE FORMAT=JSON``, MySQL 8 ``EXPLAIN ANALYZE``, SQLite
``EXPLAIN QUERY PLAN`` (never analyzed), others a plain ``EXPLAIN`` when
Django knows how.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from querylens.conf import conf
from querylens.explain.base import Failure, database_errors, describe_error, params_for
from querylens.explain.indexes import IndexAdvice, advise
from querylens.explain.mysql import _run_mariadb, _run_mysql, parse_mariadb, parse_mysql_tree
from querylens.explain.plan import (
    ESTIMATE_FACTOR,
    LARGE_SCAN_ROWS,
    ExplainResult,
    PlanNode,
    find_warnings,
)
from querylens.explain.postgresql import _run_postgresql, parse_postgres
from querylens.explain.safety import _PLACEHOLDER, Mode, Verdict, check_statement
from querylens.explain.sqlite import _run_other, _run_sqlite, parse_sqlite
from querylens.records import QueryRecord
from querylens.redaction import REDACTED

__all__ = [
    "ESTIMATE_FACTOR",
    "LARGE_SCAN_ROWS",
    "ExplainResult",
    "IndexAdvice",
    "Mode",
    "PlanNode",
    "Verdict",
    "check_statement",
    "explain_query",
    "find_warnings",
    "parse_mariadb",
    "parse_mysql_tree",
    "parse_postgres",
    "parse_sqlite",
]

logger = logging.getLogger("querylens")


def explain_query(query: QueryRecord, *, timeout_ms: int | None = None) -> ExplainResult:
    """EXPLAIN one recorded query on its own database alias. Never raises."""
    from django.db import connections

    timeout = int(timeout_ms if timeout_ms is not None else conf.EXPLAIN_TIMEOUT_MS)
    alias = query.alias
    if alias not in connections.settings:
        return ExplainResult(
            vendor="unknown",
            alias=alias,
            error=f"The database alias {alias!r} is not configured here.",
        )
    connection = connections[alias]
    vendor = _vendor(connection)
    result = ExplainResult(vendor=vendor, alias=alias)
    verdict = check_statement(query.sql, many=query.many)
    if verdict.mode is Mode.REFUSE:
        result.error = f"This query is not explained: {verdict.reason}"
        return result
    if query.params is None and _PLACEHOLDER.search(verdict.sql):
        result.error = (
            "This query's parameters were not recorded (QUERYLENS['RECORD_PARAMS'] is off), "
            "so it cannot be run again to be explained."
        )
        return result
    if _redacted(query):
        result.error = (
            "This query's secret values were redacted before it was stored "
            "(QUERYLENS['REDACT']), so it cannot be run again to be explained."
        )
        return result
    params = params_for(query.params)
    runner = _RUNNERS.get(vendor, _run_other)
    try:
        runner(connection, verdict, params, timeout, result)
    except Failure as failure:
        result.error = str(failure)
    except Exception as exc:
        result.error = describe_error(exc, timeout)
        if not isinstance(exc, database_errors()):
            logger.exception("querylens could not explain query %s on %r", query.index, alias)
    if result.plan is not None and not result.error:
        result.indexes = advise(connection, vendor, verdict.sql, params, result.plan, timeout)
        result.warnings = find_warnings(result.plan, analyzed=result.analyzed)
    if verdict.mode is Mode.PLAN:
        # Why it was not analyzed matters more than the vendor's general note.
        result.note = f"Not analyzed. {verdict.reason}"
    return result


def _redacted(query: QueryRecord) -> bool:
    if f"'{REDACTED}'" in query.sql:
        return True
    params = query.params
    values = params.values() if isinstance(params, dict) else params
    return isinstance(values, Iterable) and not isinstance(values, str) and REDACTED in values


def _vendor(connection: Any) -> str:
    vendor = str(connection.vendor)
    if vendor == "mysql" and getattr(connection, "mysql_is_mariadb", False):
        return "mariadb"
    return vendor


_RUNNERS: dict[str, Callable[[Any, Verdict, Any, int, ExplainResult], None]] = {
    "postgresql": _run_postgresql,
    "mariadb": _run_mariadb,
    "mysql": _run_mysql,
    "sqlite": _run_sqlite,
}
