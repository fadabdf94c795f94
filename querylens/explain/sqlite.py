"""SQLite: ``EXPLAIN QUERY PLAN`` (SQLite cannot analyze), and other vendors."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from querylens.explain.base import Failure, rolled_back
from querylens.explain.plan import ExplainResult, PlanNode
from querylens.explain.safety import Verdict


def parse_sqlite(rows: Sequence[Sequence[Any]]) -> tuple[PlanNode, str]:
    """``EXPLAIN QUERY PLAN`` rows ``(id, parent, notused, detail)`` -> (tree, text)."""
    root = PlanNode(label="QUERY PLAN")
    nodes: dict[int, PlanNode] = {0: root}
    for row in rows:
        node_id, parent, detail = int(row[0]), int(row[1]), str(row[-1])
        node = PlanNode(label=detail)
        if detail.startswith("SCAN ") and " USING " not in detail:
            node.full_scan = True
            node.relation = detail.split()[1]
        elif detail.startswith(("SEARCH ", "SCAN ")):
            node.relation = detail.split()[1]
        nodes.get(parent, root).children.append(node)
        nodes[node_id] = node
    lines = ["QUERY PLAN"]

    def draw(node: PlanNode, prefix: str) -> None:
        for position, child in enumerate(node.children):
            last = position == len(node.children) - 1
            lines.append(f"{prefix}{'`--' if last else '|--'}{child.label}")
            draw(child, prefix + ("   " if last else "|  "))

    draw(root, "")
    return root, "\n".join(lines)


def _run_sqlite(
    connection: Any, verdict: Verdict, params: Any, timeout: int, result: ExplainResult
) -> None:
    output: list[Sequence[Any]] = []

    def body(cursor: Any) -> None:
        cursor.execute(f"EXPLAIN QUERY PLAN {verdict.sql}", params)
        output.extend(cursor.fetchall())

    rolled_back(connection, body)
    result.analyzed = False
    result.plan, result.plan_text = parse_sqlite(output)
    result.note = (
        "Not analyzed: SQLite's EXPLAIN QUERY PLAN shows the plan it chose without running "
        "the query, so there are no timings or row counts."
    )


def _run_other(
    connection: Any, verdict: Verdict, params: Any, timeout: int, result: ExplainResult
) -> None:
    if not connection.features.supports_explaining_query_execution:
        raise Failure(f"EXPLAIN is not supported on {connection.display_name}.")
    prefix = connection.ops.explain_query_prefix()
    output: list[Sequence[Any]] = []

    def body(cursor: Any) -> None:
        cursor.execute(f"{prefix} {verdict.sql}", params)
        output.extend(cursor.fetchall())

    rolled_back(connection, body)
    result.analyzed = False
    result.plan_text = "\n".join(" ".join(str(value) for value in row) for row in output)
    result.note = f"Not analyzed: querylens runs a plain EXPLAIN on {connection.display_name}."
