"""Index advice from a plan: which index to add, as a line of model code.

From the plan, full scans of a table that the statement filters or joins on,
and a sort that feeds a ``LIMIT``; from the SQL, the columns of that table it
compares or joins on (equality before range) and sorts by. Each table and column is mapped back to
``app.Model.field`` through Django's model registry, columns that already
lead an index are skipped, and the advice is the line to paste into the
model's ``Meta.indexes``.

On PostgreSQL with the hypopg extension the advice is verified: inside the
same always-rolled-back, read-only transaction a hypothetical index is
created, the statement planned again (never run), and the advice kept only
when the planner's cost drops by half or more. Elsewhere it is marked not
verified. No real DDL is ever run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from querylens.explain.base import rolled_back
from querylens.explain.plan import PlanNode

logger = logging.getLogger("querylens")

#: A scan reading fewer rows than this (when the plan says) is left alone.
MIN_ROWS = 1000
#: Verified advice must at least halve the planner's cost.
MIN_COST_RATIO = 2.0
HYPOPG_HINT = (
    "Not verified: PostgreSQL's hypopg extension is not installed in this database "
    "(Debian/Ubuntu: apt-get install postgresql-<version>-hypopg, then CREATE EXTENSION "
    "hypopg). With it, querylens proves the index on a hypothetical copy."
)
UNVERIFIED_HINT = (
    "Not verified: only PostgreSQL (with hypopg) can try an index without creating it."
)

_QUOTED = r'(?:"([^"]+)"|`([^`]+)`|\b([A-Za-z_][A-Za-z0-9_]*)\b)'
_COMPARISON = re.compile(
    _QUOTED
    + r"\."
    + _QUOTED
    + r"\s*(=|<>|!=|<=|>=|<|>|\bIN\b|\bLIKE\b|\bILIKE\b|\bBETWEEN\b|\bIS\b)",
    re.IGNORECASE,
)
#: The right-hand column of a join condition: ``... = "table"."column"``.
_JOINED = re.compile(r"=\s*" + _QUOTED + r"\." + _QUOTED)
_ORDER_BY = re.compile(r"\bORDER\s+BY\b(.*?)(?:\bLIMIT\b|\bOFFSET\b|\bFOR\b|$)", re.I | re.S)
_LIMIT = re.compile(r"\bLIMIT\b", re.IGNORECASE)
_COLUMN = re.compile(_QUOTED + r"\." + _QUOTED + r"(\s+DESC\b)?", re.IGNORECASE)
_EQUALITY = frozenset({"=", "IN", "IS"})


@dataclass
class IndexAdvice:
    """One index to add, with its evidence."""

    model: str
    fields: list[str]
    code: str
    table: str
    columns: list[str]
    verified: bool
    cost_before: float | None
    cost_after: float | None
    reason: str
    #: The plan step the advice comes from (highlighted on the page).
    node: PlanNode | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "fields": list(self.fields),
            "code": self.code,
            "table": self.table,
            "columns": list(self.columns),
            "verified": self.verified,
            "cost_before": self.cost_before,
            "cost_after": self.cost_after,
            "reason": self.reason,
        }


def _name(match: re.Match[str], start: int) -> str:
    return next(group for group in match.groups()[start : start + 3] if group)


def _candidates(sql: str, table: str) -> tuple[list[str], list[str], list[str]]:
    """Columns of ``table`` the SQL compares for equality, by range, and sorts by."""
    equality: list[str] = []
    ranged: list[str] = []
    for match in _COMPARISON.finditer(sql):
        if _name(match, 0) != table:
            continue
        column = _name(match, 3)
        operator = match.group(7).upper()
        target = equality if operator in _EQUALITY else ranged
        if column not in equality and column not in ranged:
            target.append(column)
    for match in _JOINED.finditer(sql):
        # A join on this table's column, written on the right of the "=".
        if _name(match, 0) == table and _name(match, 3) not in equality:
            equality.append(_name(match, 3))
    ordering: list[str] = []
    order = _ORDER_BY.search(sql)
    if order and _LIMIT.search(sql, order.end(1)):
        for match in _COLUMN.finditer(order.group(1)):
            if _name(match, 0) == table and _name(match, 3) not in ordering:
                ordering.append(_name(match, 3))
    return equality, ranged, ordering


def _sorts(plan: PlanNode) -> bool:
    return any(
        "sort" in node.label.lower() or "temp b-tree" in node.label.lower()
        for _, node in plan.walk()
    )


def _model_fields(table: str, columns: Iterable[str]) -> tuple[Any, list[str]] | None:
    """The model with ``db_table == table`` and its field names for ``columns``."""
    from django.apps import apps

    for model in apps.get_models():
        if model._meta.db_table != table:
            continue
        by_column = {getattr(f, "column", None): f.name for f in model._meta.concrete_fields}
        names = [by_column.get(column) for column in columns]
        if all(names):
            return model, [str(name) for name in names]
    return None


def _leading_columns(connection: Any, table: str) -> set[str]:
    """First columns of the table's existing indexes (primary key included)."""
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, table)
    return {
        str(info["columns"][0])
        for info in constraints.values()
        if info.get("columns")
        and (info.get("index") or info.get("primary_key") or info.get("unique"))
    }


def _code(model: Any, fields: list[str], table: str, columns: list[str]) -> tuple[str, str]:
    digest = hashlib.blake2b(f"{table}|{','.join(columns)}".encode(), digest_size=3).hexdigest()
    prefix = "_".join([model._meta.model_name, *fields])[:19].rstrip("_")
    name = f"{prefix}_{digest}_idx"
    listed = ", ".join(f'"{name}"' for name in fields)
    return name, f'models.Index(fields=[{listed}], name="{name}")'


def advise(
    connection: Any, vendor: str, sql: str, params: Any, plan: PlanNode | None, timeout: int
) -> list[IndexAdvice]:
    """Index advice for one explained statement; never raises."""
    if plan is None:
        return []
    try:
        return _advise(connection, vendor, sql, params, plan, timeout)
    except Exception:
        logger.warning("querylens could not work out index advice", exc_info=True)
        return []


def _advise(
    connection: Any, vendor: str, sql: str, params: Any, plan: PlanNode, timeout: int
) -> list[IndexAdvice]:
    advice: list[IndexAdvice] = []
    seen: set[tuple[str, tuple[str, ...]]] = set()
    sorted_with_limit = _sorts(plan)
    for _, node in plan.walk():
        table = node.relation
        if not node.full_scan or not table:
            continue
        if node.rows_read is not None and node.rows_read < MIN_ROWS:
            continue
        equality, ranged, ordering = _candidates(sql, table)
        columns = [*equality, *ranged[:1]]
        if not ranged and sorted_with_limit:
            columns += [column for column in ordering if column not in columns]
        key = (table, tuple(columns))
        if not columns or key in seen:
            continue
        seen.add(key)
        mapped = _model_fields(table, columns)
        if mapped is None:
            continue  # not a table of an installed model: no code to paste
        # Only now ask the database (a catalog query) what indexes exist.
        if columns[0] in _leading_columns(connection, table):
            continue  # an index already serves this filter
        model, fields = mapped
        _, code = _code(model, fields, table, columns)
        node.advised = True
        node.warnings.append(f"Index advice: {code}")
        advice.append(
            IndexAdvice(
                model=model._meta.label,
                fields=fields,
                code=code,
                table=table,
                columns=columns,
                verified=False,
                cost_before=None,
                cost_after=None,
                reason=UNVERIFIED_HINT,
                node=node,
            )
        )
    if advice and vendor == "postgresql":
        advice = _verify_postgresql(connection, sql, params, advice, timeout)
    return advice


def _plan_cost(cursor: Any, sql: str, params: Any) -> float:
    cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
    data = cursor.fetchone()[0]
    if isinstance(data, str):
        data = json.loads(data)
    return float(data[0]["Plan"]["Total Cost"])


def _verify_postgresql(
    connection: Any, sql: str, params: Any, advice: list[IndexAdvice], timeout: int
) -> list[IndexAdvice]:
    kept: list[IndexAdvice] = []

    def body(cursor: Any) -> None:
        cursor.execute("SET TRANSACTION READ ONLY")
        cursor.execute(f"SET LOCAL statement_timeout = {timeout:d}")
        cursor.execute("SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'hypopg'")
        if cursor.fetchone() is None:
            for item in advice:
                item.reason = HYPOPG_HINT
            kept.extend(advice)
            return
        quote = connection.ops.quote_name
        # Hypothetical indexes are reset after each try, so one plan without
        # any serves as "before" for every item.
        before = _plan_cost(cursor, sql, params)
        for item in advice:
            columns = ", ".join(quote(column) for column in item.columns)
            cursor.execute(
                "SELECT indexrelid FROM hypopg_create_index(%s)",
                [f"CREATE INDEX ON {quote(item.table)} ({columns})"],
            )
            try:
                after = _plan_cost(cursor, sql, params)
            finally:
                # Hypothetical indexes live in the session, not the transaction.
                cursor.execute("SELECT hypopg_reset()")
            item.verified = True
            item.cost_before = round(before, 2)
            item.cost_after = round(after, 2)
            if after * MIN_COST_RATIO <= before:
                item.reason = (
                    f"Verified with a hypothetical index (hypopg): estimated cost "
                    f"{before:,.0f} -> {after:,.0f}."
                )
                kept.append(item)
            elif item.node is not None:
                # Not worth it: the planner would not use it enough.
                item.node.advised = False
                item.node.warnings = [w for w in item.node.warnings if item.code not in w]

    rolled_back(connection, body)
    return kept
