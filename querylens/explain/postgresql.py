"""PostgreSQL: ``EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)``, parsed into a tree."""

from __future__ import annotations

import json
from typing import Any

from querylens.explain.base import rolled_back
from querylens.explain.plan import ExplainResult, PlanNode, _number
from querylens.explain.safety import Mode, Verdict

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


def _run_postgresql(
    connection: Any, verdict: Verdict, params: Any, timeout: int, result: ExplainResult
) -> None:
    analyze = verdict.mode is Mode.ANALYZE
    options = "ANALYZE, BUFFERS, FORMAT JSON" if analyze else "FORMAT JSON"
    output: list[Any] = []

    def body(cursor: Any) -> None:
        # Allowed in a savepoint too; rolling the savepoint back restores both.
        cursor.execute("SET TRANSACTION READ ONLY")
        cursor.execute(f"SET LOCAL statement_timeout = {timeout:d}")
        cursor.execute(f"EXPLAIN ({options}) {verdict.sql}", params)
        output.append(cursor.fetchone()[0])

    rolled_back(connection, body)
    result.read_only = True
    result.analyzed = analyze
    result.plan, result.plan_text = parse_postgres(output[0])
