"""The plan model shared by every vendor: a tree of steps, the result, warnings."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

_VENDOR_NAMES = {
    "postgresql": "PostgreSQL",
    "mariadb": "MariaDB",
    "mysql": "MySQL",
    "sqlite": "SQLite",
    "oracle": "Oracle",
}
#: A sequential / full scan reading at least this many rows is worth a warning.
LARGE_SCAN_ROWS = 10_000
#: The slowest step is pointed out only when its own time is at least this
#: (ms): a 0.05 ms primary-key lookup is the slowest step of a fast query,
#: and nothing to act on.
SLOW_STEP_MS = 1.0
#: Estimated and actual rows differing by this factor or more get a warning.
ESTIMATE_FACTOR = 10.0


@dataclass
class PlanNode:
    """One step of a plan, whatever the vendor."""

    label: str
    relation: str | None = None
    details: list[str] = field(default_factory=list)
    #: Rows the planner expected, per loop.
    estimated_rows: float | None = None
    #: Rows actually produced, per loop (ANALYZE only).
    actual_rows: float | None = None
    loops: float | None = None
    #: Time spent in this step and below, over all loops, in ms.
    time_ms: float | None = None
    #: Time spent in this step alone, in ms.
    self_ms: float | None = None
    #: A scan reading a whole table.
    full_scan: bool = False
    #: Rows the scan read (actual when analyzed, else the estimate).
    rows_read: float | None = None
    slowest: bool = False
    #: Index advice comes from this step (``querylens.explain.indexes``).
    advised: bool = False
    warnings: list[str] = field(default_factory=list)
    children: list[PlanNode] = field(default_factory=list)

    def walk(self, depth: int = 0) -> Iterator[tuple[int, PlanNode]]:
        """This node and every node below it, depth-first, with their depth."""
        yield depth, self
        for child in self.children:
            yield from child.walk(depth + 1)

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "relation": self.relation,
            "details": list(self.details),
            "estimated_rows": self.estimated_rows,
            "actual_rows": self.actual_rows,
            "loops": self.loops,
            "time_ms": self.time_ms,
            "self_ms": self.self_ms,
            "full_scan": self.full_scan,
            "rows_read": self.rows_read,
            "slowest": self.slowest,
            "advised": self.advised,
            "warnings": list(self.warnings),
            "children": [child.to_dict() for child in self.children],
        }


@dataclass
class ExplainResult:
    """The outcome of one EXPLAIN: a plan, or a message saying why not."""

    vendor: str
    analyzed: bool = False
    plan_text: str = ""
    plan: PlanNode | None = None
    warnings: list[str] = field(default_factory=list)
    #: Why there is no plan (refused, failed, timed out).
    error: str | None = None
    #: Something to know about the plan (why it is not analyzed).
    note: str | None = None
    #: Whether it ran in a read-only transaction.
    read_only: bool = False
    alias: str = ""
    #: Indexes to add (``querylens.explain.indexes.IndexAdvice``).
    indexes: list[Any] = field(default_factory=list)

    @property
    def vendor_name(self) -> str:
        return _VENDOR_NAMES.get(self.vendor, self.vendor)

    @property
    def has_estimates(self) -> bool:
        """Whether any step carries the planner's row estimate (SQLite's never do)."""
        return any(node.estimated_rows is not None for _, node in self.rows)

    @property
    def rows(self) -> list[tuple[int, PlanNode]]:
        """The plan flattened for a table, with each node's depth."""
        return list(self.plan.walk()) if self.plan else []

    def to_dict(self) -> dict[str, Any]:
        return {
            "vendor": self.vendor,
            "analyzed": self.analyzed,
            "plan_text": self.plan_text,
            "plan": self.plan.to_dict() if self.plan else None,
            "warnings": list(self.warnings),
            "error": self.error,
            "note": self.note,
            "read_only": self.read_only,
            "alias": self.alias,
            "indexes": [advice.to_dict() for advice in self.indexes],
        }


def find_warnings(root: PlanNode, *, analyzed: bool) -> list[str]:
    """Mark the slowest step (when it matters); flag big full scans and row estimates off by 10x.

    A row estimate is flagged where the error starts: the deepest step that
    is off, not every step above it that inherits the error.
    """
    nodes = [node for _, node in root.walk()]
    warnings: list[str] = []
    timed = [node for node in nodes if node.self_ms is not None]
    if analyzed and len(nodes) > 1 and timed and root.time_ms:
        slowest = max(timed, key=lambda node: node.self_ms or 0.0)
        if slowest.self_ms and slowest.self_ms >= SLOW_STEP_MS:
            slowest.slowest = True
            share = min(slowest.self_ms / root.time_ms * 100, 100.0)
            slowest.warnings.append(f"Slowest step: {share:.0f}% of the time.")
            warnings.append(
                f"Slowest step: {slowest.label}, {slowest.self_ms:.3f} ms of "
                f"{root.time_ms:.3f} ms ({share:.0f}%)."
            )
    for node in nodes:
        if node.full_scan and node.rows_read is not None and node.rows_read >= LARGE_SCAN_ROWS:
            verb = "read" if analyzed else "is expected to read"
            node.warnings.append(f"Full scan: {verb} {node.rows_read:,.0f} rows.")
            warnings.append(
                f"Full scan of {node.relation or 'a table'} {verb} {node.rows_read:,.0f} rows: "
                "an index on the filtered or joined columns may help."
            )
        factor = _estimate_factor(node) if analyzed else None
        # A step fed by a misjudged step inherits its error; only the step
        # where the error starts is worth a warning.
        if factor is not None and not any(
            _estimate_factor(below) is not None for _, below in node.walk() if below is not node
        ):
            node.warnings.append(f"Row estimate off by {factor:,.0f}x.")
            cause = (
                f"stale or missing statistics? Run ANALYZE on {node.relation}."
                if node.relation
                else "the planner misjudged this step (stale statistics or correlated columns)."
            )
            warnings.append(
                f"Row estimate off by {factor:,.0f}x at {node.label}: planned "
                f"{node.estimated_rows:,.0f} rows, got {node.actual_rows:,.0f}; {cause}"
            )
    return warnings


def _estimate_factor(node: PlanNode) -> float | None:
    """How far the planner's row estimate was off, when by ``ESTIMATE_FACTOR`` or more."""
    if node.estimated_rows is None or node.actual_rows is None:
        return None
    estimated = max(node.estimated_rows, 1.0)
    actual = max(node.actual_rows, 1.0)
    factor = max(estimated / actual, actual / estimated)
    return factor if factor >= ESTIMATE_FACTOR else None


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _round(value: Any) -> float:
    return round(float(value), 3)


def _plain(value: Any) -> str:
    return ", ".join(map(str, value)) if isinstance(value, list) else str(value)
