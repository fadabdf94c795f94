"""PostgreSQL: ``EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)``, parsed into a tree."""

from __future__ import annotations

import json
import re
from typing import Any

from querylens.explain.base import Failure, rolled_back
from querylens.explain.plan import ExplainResult, PlanNode, _number
from querylens.explain.safety import Mode, Verdict, denied

_PG_DETAILS = (
    "Index Cond",
    "Recheck Cond",
    "Hash Cond",
    "Merge Cond",
    "Join Filter",
    "Filter",
    "Sort Key",
    "Group Key",
    "Rows Removed by Filter",
    "Rows Removed by Join Filter",
    "Rows Removed by Index Recheck",
    "Sort Method",
    "CTE Name",
    "Subplan Name",
)
_PG_SCANS = frozenset(("Seq Scan", "Parallel Seq Scan"))


def parse_postgres(data: Any) -> tuple[PlanNode, str]:
    """``EXPLAIN (FORMAT JSON)`` output -> (tree, PostgreSQL-like text)."""
    if isinstance(data, (str, bytes)):
        data = json.loads(data)
    top = data[0] if isinstance(data, list) else data
    root = _pg_node(top["Plan"])
    lines = _pg_text(root, top["Plan"], 0)
    for key in ("Planning Time", "Execution Time"):
        if key in top:
            lines.append(f"{key}: {top[key]:.3f} ms")
    return root, "\n".join(lines)


def _pg_label(plan: dict[str, Any]) -> str:
    node = str(plan.get("Node Type", "?"))
    if node == "ModifyTable" and plan.get("Operation"):
        node = str(plan["Operation"])
    join = plan.get("Join Type")
    if join and join != "Inner":
        if node.endswith(" Join"):
            node = f"{node[:-5]} {join} Join"
        elif node == "Nested Loop":
            node = f"Nested Loop {join} Join"
    strategy = plan.get("Strategy")
    if node == "Aggregate" and strategy in ("Hashed", "Sorted", "Mixed"):
        node = {"Hashed": "HashAggregate", "Sorted": "GroupAggregate", "Mixed": "MixedAggregate"}[
            strategy
        ]
    if plan.get("Scan Direction") == "Backward":
        node += " Backward"
    if "Index Name" in plan:
        node += (
            f" using {plan['Index Name']}"
            if "Relation Name" in plan
            else f" on {plan['Index Name']}"
        )
    if "Relation Name" in plan:
        node += f" on {plan['Relation Name']}"
        alias = plan.get("Alias")
        if alias and alias != plan["Relation Name"]:
            node += f" {alias}"
    elif "CTE Name" in plan:
        node += f" on {plan['CTE Name']}"
    return node


def _pg_node(plan: dict[str, Any]) -> PlanNode:
    loops = plan.get("Actual Loops")
    node = PlanNode(
        label=_pg_label(plan),
        relation=plan.get("Relation Name"),
        estimated_rows=_number(plan.get("Plan Rows")),
        actual_rows=_number(plan.get("Actual Rows")),
        loops=_number(loops),
    )
    for key in _PG_DETAILS:
        if key in plan:
            value = plan[key]
            if key.startswith("Rows Removed") and not value:
                continue
            node.details.append(
                f"{key}: {', '.join(map(str, value)) if isinstance(value, list) else value}"
            )
    buffers = [
        f"{name}={plan[key]}"
        for name, key in (("hit", "Shared Hit Blocks"), ("read", "Shared Read Blocks"))
        if plan.get(key)
    ]
    if buffers:
        node.details.append("Buffers: shared " + " ".join(buffers))
    node.children = [_pg_node(child) for child in plan.get("Plans") or []]
    total = _number(plan.get("Actual Total Time"))
    if total is not None and node.loops is not None:
        node.time_ms = round(total * node.loops, 3)
        below = sum(child.time_ms or 0.0 for child in node.children)
        node.self_ms = round(max(node.time_ms - below, 0.0), 3)
    if plan.get("Node Type") in _PG_SCANS:
        node.full_scan = True
        if node.actual_rows is not None:
            removed = _number(plan.get("Rows Removed by Filter")) or 0.0
            node.rows_read = (node.actual_rows + removed) * (node.loops or 1)
        else:
            node.rows_read = node.estimated_rows
    return node


def _pg_text(node: PlanNode, plan: dict[str, Any], depth: int) -> list[str]:
    cost = ""
    if "Total Cost" in plan:
        cost = (
            f"  (cost={plan.get('Startup Cost', 0):.2f}..{plan['Total Cost']:.2f} "
            f"rows={plan.get('Plan Rows', 0)} width={plan.get('Plan Width', 0)})"
        )
    actual = ""
    if "Actual Total Time" in plan:
        actual = (
            f" (actual time={plan.get('Actual Startup Time', 0):.3f}..{plan['Actual Total Time']:.3f} "
            f"rows={plan.get('Actual Rows', 0)} loops={plan.get('Actual Loops', 0)})"
        )
    elif plan.get("Actual Loops") == 0:
        actual = " (never executed)"
    pad = "      " * depth
    head = f"{pad}->  " if depth else ""
    lines = [f"{head}{node.label}{cost}{actual}"]
    lines.extend(f"{pad}{'      ' if depth else '  '}{detail}" for detail in node.details)
    for child, child_plan in zip(node.children, plan.get("Plans") or [], strict=False):
        lines.extend(_pg_text(child, child_plan, depth + 1))
    return lines


# --- what a statement calls -------------------------------------------------------

#: ``name(`` or ``"name"(``: a function call in SQL, a view's definition, a
#: function's body or the expressions of a VERBOSE plan.
_CALL = re.compile(r'(?:"((?:[^"]|"")+)"|\b([A-Za-z_][A-Za-z0-9_$]*))\s*\(')
#: Operators, whose functions can be user-defined too.
_OPERATOR = re.compile(r"(?<![A-Za-z0-9_\"'])([-+*/<>=~!@#%^&|`?]{1,8})(?=[\s(A-Za-z0-9_\"'$])")
_RELATION = re.compile(r'(?:"((?:[^"]|"")+)"|\b([A-Za-z_][A-Za-z0-9_$]*))')
#: Languages whose bodies can be read for what they call.
_READABLE = frozenset(("sql", "plpgsql"))
#: Follow functions calling functions (and views on views) this deep.
_MAX_DEPTH = 4


class Unsafe(Exception):
    """ANALYZE (``refuse=False``) or any EXPLAIN (``refuse=True``) must not run."""

    def __init__(self, reason: str, *, refuse: bool) -> None:
        super().__init__(reason)
        self.refuse = refuse


def _names(pattern: re.Pattern[str], texts: list[str]) -> set[str]:
    found = set()
    for text in texts:
        for quoted, bare in pattern.findall(text):
            found.add(quoted.replace('""', '"') if quoted else bare.lower())
    return found


def _strings(value: Any) -> list[str]:
    """Every string inside a JSON plan (expressions, names, conditions)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [text for item in value.values() for text in _strings(item)]
    if isinstance(value, list):
        return [text for item in value for text in _strings(item)]
    return []


def check_calls(cursor: Any, texts: list[str], *, planning: bool) -> None:
    """Raise ``Unsafe`` when what ``texts`` call could act outside the transaction.

    Every called name is looked up in ``pg_proc`` (every overload: one unsafe
    overload is enough); views' definitions, user-defined operators and the
    bodies of SQL and PL/pgSQL functions are followed.

    * A denied (``safety.denied``) or volatile function called by the
      statement or its views: no ANALYZE. The planner never evaluates a
      volatile function, so the plan alone is safe.
    * The same reached through a function declared stable or immutable, or
      dynamic SQL (``EXECUTE``) in one: no EXPLAIN at all, because the
      planner may evaluate stable and immutable functions to estimate rows.

    ``planning`` says the texts are a VERBOSE plan (views already expanded,
    operators shown as operators).
    """
    direct = _names(_CALL, texts)
    relations = set() if planning else _names(_RELATION, texts)
    operators = {op for text in texts for op in _OPERATOR.findall(text)} if planning else set()
    inside: set[str] = set()  # called from bodies of stable/immutable functions
    seen: set[str] = set()
    seen_relations: set[str] = set()
    plan_only: str | None = None
    for _depth in range(_MAX_DEPTH):
        for _view, definition in _views(cursor, relations - seen_relations):
            direct |= _names(_CALL, [definition])
            relations |= _names(_RELATION, [definition])
        seen_relations |= relations
        wanted = (direct | inside) - seen
        if not wanted and not operators:
            break
        rows = _functions(cursor, wanted, operators)
        seen |= wanted
        operators = set()
        for name, schema, volatility, language, source in rows:
            label = f"{name}()" if schema in ("pg_catalog", "public") else f"{schema}.{name}()"
            declared = "immutable" if volatility == "i" else "stable"
            hidden = name in inside and name not in direct
            if denied(name) or volatility == "v":
                what = (
                    "whose effect a rollback would not undo"
                    if denied(name)
                    else (
                        "a volatile function: running it could change what a rollback does not undo"
                    )
                )
                if hidden:
                    raise Unsafe(
                        f"It reaches {label}, {what}, through a function declared stable or "
                        "immutable, which PostgreSQL may run even while only planning.",
                        refuse=True,
                    )
                plan_only = plan_only or f"It calls {label}, {what}."
                continue
            if schema == "pg_catalog" or language not in _READABLE or not source:
                continue
            if language == "plpgsql" and re.search(r"\bexecute\b", source, re.IGNORECASE):
                raise Unsafe(
                    f"{label} is declared {declared} but runs dynamic SQL (EXECUTE), whose "
                    "effect querylens cannot check.",
                    refuse=True,
                )
            inside |= _names(_CALL, [source])
    if plan_only is not None:
        raise Unsafe(plan_only, refuse=False)


def _functions(
    cursor: Any, names: set[str], operators: set[str]
) -> list[tuple[str, str, str, str, str]]:
    rows: list[tuple[str, str, str, str, str]] = []
    if names:
        cursor.execute(
            "SELECT p.proname, n.nspname, p.provolatile, l.lanname, p.prosrc "
            "FROM pg_catalog.pg_proc p "
            "JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace "
            "JOIN pg_catalog.pg_language l ON l.oid = p.prolang "
            "WHERE p.proname = ANY(%s)",
            [sorted(names)],
        )
        rows.extend(cursor.fetchall())
    if operators:
        # Built-in operators are immutable; only user-defined ones can hide a call.
        cursor.execute(
            "SELECT p.proname, n.nspname, p.provolatile, l.lanname, p.prosrc "
            "FROM pg_catalog.pg_operator o "
            "JOIN pg_catalog.pg_proc p ON p.oid = o.oprcode "
            "JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace "
            "JOIN pg_catalog.pg_language l ON l.oid = p.prolang "
            "WHERE o.oprname = ANY(%s) AND n.nspname <> 'pg_catalog'",
            [sorted(operators)],
        )
        rows.extend(cursor.fetchall())
    return rows


def _views(cursor: Any, names: set[str]) -> list[tuple[str, str]]:
    if not names:
        return []
    cursor.execute(
        "SELECT c.relname, pg_catalog.pg_get_viewdef(c.oid) FROM pg_catalog.pg_class c "
        "WHERE c.relkind IN ('v', 'm') AND c.relname = ANY(%s)",
        [sorted(names)],
    )
    return [(str(name), str(definition or "")) for name, definition in cursor.fetchall()]


def _foreign_scan(plan: Any) -> bool:
    if isinstance(plan, dict):
        if plan.get("Node Type") == "Foreign Scan":
            return True
        return any(_foreign_scan(value) for value in plan.values())
    if isinstance(plan, list):
        return any(_foreign_scan(item) for item in plan)
    return False


# --- running -------------------------------------------------------------------------


def _run_postgresql(
    connection: Any, verdict: Verdict, params: Any, timeout: int, result: ExplainResult
) -> None:
    analyze = verdict.mode is Mode.ANALYZE
    output: list[Any] = []
    why_not: list[str] = []

    def body(cursor: Any) -> None:
        nonlocal analyze
        # Allowed in a savepoint too; rolling the savepoint back restores both.
        cursor.execute("SET TRANSACTION READ ONLY")
        cursor.execute(f"SET LOCAL statement_timeout = {timeout:d}")
        try:
            # Before anything is planned: what the text and its views call.
            check_calls(cursor, [verdict.sql], planning=False)
            if analyze:
                # A plan made without running anything shows every call,
                # views expanded; ANALYZE only if all of them are safe.
                verbose = connection.ops.explain_query_prefix("JSON", verbose=True)
                cursor.execute(f"{verbose} {verdict.sql}", params)
                planned = cursor.fetchone()[0]
                if isinstance(planned, str):
                    planned = json.loads(planned)
                if _foreign_scan(planned):
                    raise Unsafe(
                        "It reads a foreign table: ANALYZE would run a query on another server.",
                        refuse=False,
                    )
                check_calls(cursor, _strings(planned), planning=True)
        except Unsafe as unsafe:
            if unsafe.refuse:
                raise Failure(f"This query is not explained: {unsafe}") from None
            analyze = False
            why_not.append(str(unsafe))
        options = {"analyze": True, "buffers": True} if analyze else {}
        prefix = connection.ops.explain_query_prefix("JSON", **options)
        cursor.execute(f"{prefix} {verdict.sql}", params)
        output.append(cursor.fetchone()[0])

    rolled_back(connection, body)
    result.read_only = True
    result.analyzed = analyze
    result.plan, result.plan_text = parse_postgres(output[0])
    if why_not:
        result.note = f"Not analyzed. {why_not[0]}"
