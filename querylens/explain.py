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

import enum
import json
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlparse import lexer
from sqlparse import tokens as T

from querylens.conf import conf
from querylens.fingerprint import statement_kind
from querylens.records import QueryRecord
from querylens.redaction import REDACTED

logger = logging.getLogger("querylens")

_VENDOR_NAMES = {
    "postgresql": "PostgreSQL",
    "mariadb": "MariaDB",
    "mysql": "MySQL",
    "sqlite": "SQLite",
    "oracle": "Oracle",
}
#: A sequential / full scan reading at least this many rows is worth a warning.
LARGE_SCAN_ROWS = 10_000
#: Estimated and actual rows differing by this factor or more get a warning.
ESTIMATE_FACTOR = 10.0

#: Words that make a SELECT write or lock rows (``FOR UPDATE``, ``FOR SHARE``,
#: ``SELECT ... INTO``, data-modifying CTEs).
_WRITE_WORDS = frozenset(
    [
        "INSERT",
        "UPDATE",
        "DELETE",
        "MERGE",
        "UPSERT",
        "TRUNCATE",
        "CREATE",
        "DROP",
        "ALTER",
        "GRANT",
        "REVOKE",
        "INTO",
        "SHARE",
    ]
)
#: Functions whose effect survives a rollback or reaches outside the
#: transaction (sequence values, session locks, other backends, files).
_UNSAFE_FUNCTIONS = frozenset(
    [
        "nextval",
        "setval",
        "pg_terminate_backend",
        "pg_cancel_backend",
        "pg_reload_conf",
        "pg_rotate_logfile",
        "pg_notify",
        "set_config",
        "dblink",
        "dblink_exec",
        "dblink_send_query",
        "lo_import",
        "lo_export",
        "lo_unlink",
        "get_lock",
        "release_lock",
        "release_all_locks",
        "load_file",
        "sys_exec",
        "sys_eval",
    ]
)
_UNSAFE_PREFIXES = ("pg_advisory_", "pg_try_advisory_", "dblink_", "lo_")
_PLACEHOLDER = re.compile(r"%s|%\([^()]*\)s")
_WRITE_KINDS = frozenset(("insert", "update", "delete", "replace", "merge"))


class Mode(enum.Enum):
    ANALYZE = "analyze"
    PLAN = "plan"
    REFUSE = "refuse"


@dataclass(frozen=True)
class Verdict:
    """What may be done with a statement, and why."""

    mode: Mode
    #: The single statement to explain, without a trailing ``;``.
    sql: str
    reason: str = ""


def check_statement(sql: str, *, many: bool = False) -> Verdict:
    """Decide whether ``sql`` may be analyzed, only planned, or not explained."""
    if many:
        return Verdict(
            Mode.REFUSE, sql, "It ran with executemany(), one statement per parameter set."
        )
    statement, extra = _single_statement(sql)
    if extra:
        return Verdict(Mode.REFUSE, sql, "It holds more than one statement.")
    kind = statement_kind(statement)
    words = set(_bare_words(statement))
    unsafe = sorted(
        name
        for name in _function_names(statement)
        if name.lower() in _UNSAFE_FUNCTIONS or name.lower().startswith(_UNSAFE_PREFIXES)
    )
    if unsafe:
        return Verdict(
            Mode.REFUSE,
            statement,
            f"It calls {unsafe[0]}(), whose effect a rollback would not undo.",
        )
    if kind in ("select", "with"):
        writes = sorted(word for word in words if word.upper() in _WRITE_WORDS)
        if writes:
            return Verdict(
                Mode.PLAN,
                statement,
                f"It contains {writes[0].upper()}: a statement that writes or locks rows is "
                "explained without ANALYZE, which plans it without running it.",
            )
        return Verdict(Mode.ANALYZE, statement)
    if kind in _WRITE_KINDS:
        return Verdict(
            Mode.PLAN,
            statement,
            f"{kind.upper()} statements are explained without ANALYZE, which plans them "
            "without running them, so no row changes.",
        )
    label = f"a {kind.upper()}" if kind != "other" else "this kind of"
    return Verdict(
        Mode.REFUSE,
        statement,
        f"Only SELECT, INSERT, UPDATE and DELETE statements can be explained, not {label} statement.",
    )


def _tokens(sql: str) -> Iterator[tuple[Any, str]]:
    # sqlparse's lexer is untyped; it yields (token type, text) covering all of sql.
    yield from lexer.tokenize(sql)  # type: ignore[no-untyped-call]


def _single_statement(sql: str) -> tuple[str, bool]:
    """The first statement (without its ``;``) and whether another follows."""
    offset = 0
    cut: int | None = None
    for ttype, value in _tokens(sql):
        if cut is None:
            if ttype in T.Punctuation and value == ";":
                cut = offset
        elif (
            ttype not in T.Whitespace and ttype not in T.Comment and value.strip() not in ("", ";")
        ):
            return sql[:cut], True
        offset += len(value)
    return (sql if cut is None else sql[:cut]), False


def _is_word(ttype: Any, value: str) -> bool:
    return (ttype in T.Keyword or ttype in T.Name) and value.replace("_", "a").isalnum()


def _bare_words(sql: str) -> Iterator[str]:
    """Unquoted words outside strings and comments."""
    for ttype, value in _tokens(sql):
        if _is_word(ttype, value):
            yield value


def _function_names(sql: str) -> Iterator[str]:
    """Unquoted words followed by ``(``: the functions a statement calls."""
    previous: str | None = None
    for ttype, value in _tokens(sql):
        if ttype in T.Whitespace or ttype in T.Comment:
            continue
        if value == "(" and previous is not None:
            yield previous
        previous = value if _is_word(ttype, value) else None


# --- plans -----------------------------------------------------------------


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
        }


def find_warnings(root: PlanNode, *, analyzed: bool) -> list[str]:
    """Mark the slowest step; flag big full scans and row estimates off by 10x.

    A row estimate is flagged where the error starts: the deepest step that
    is off, not every step above it that inherits the error.
    """
    nodes = [node for _, node in root.walk()]
    warnings: list[str] = []
    timed = [node for node in nodes if node.self_ms is not None]
    if analyzed and len(nodes) > 1 and timed and root.time_ms:
        slowest = max(timed, key=lambda node: node.self_ms or 0.0)
        if slowest.self_ms:
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


# --- PostgreSQL ----------------------------------------------------------------

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


# --- MariaDB -------------------------------------------------------------------

_MARIADB_ACCESS = {
    "ALL": "Full scan",
    "index": "Full index scan",
    "range": "Index range scan",
    "ref": "Index lookup",
    "eq_ref": "Unique index lookup",
    "ref_or_null": "Index lookup (or NULL)",
    "index_merge": "Index merge",
    "const": "Constant row",
    "system": "Constant row",
    "fulltext": "Full-text search",
    "hash_ALL": "Hash join scan",
    "hash_index": "Hash join lookup",
    "hash_range": "Hash join range",
}
#: Keys whose value is a step of the plan (a dict), or a list of steps.
_MARIADB_STEPS = {
    "query_block": "Query block",
    "table": "Table",
    "filesort": "Sort",
    "temporary_table": "Temporary table",
    "block-nl-join": "Block nested loop join",
    "read_sorted_file": "Read sorted file",
    "duplicates_removal": "Remove duplicates",
    "materialized": "Materialize",
    "union_result": "Union",
    "subquery": "Subquery",
    "window_functions_computation": "Window functions",
    "expression_cache": "Expression cache",
}
_MARIADB_LISTS = {
    "nested_loop": "Nested loop",
    "subqueries": "Subqueries",
    "query_specifications": "Union parts",
    "sorting_window_functions": "Window sorts",
}
_MARIADB_DETAILS = (
    "key",
    "used_key_parts",
    "ref",
    "sort_key",
    "attached_condition",
    "join_type",
    "having_condition",
)


def parse_mariadb(data: Any) -> PlanNode:
    """``ANALYZE FORMAT=JSON`` / ``EXPLAIN FORMAT=JSON`` output -> tree."""
    if isinstance(data, (str, bytes)):
        data = json.loads(data)
    return _maria_step("query_block", data["query_block"])


def _maria_step(key: str, value: dict[str, Any]) -> PlanNode:
    if key == "table":
        node = _maria_table(value)
    else:
        label = _MARIADB_STEPS.get(key, key.replace("_", " ").capitalize())
        if key == "query_block" and "select_id" in value:
            label += f" #{value['select_id']}"
        node = PlanNode(label=label, loops=_number(value.get("r_loops")))
    for detail in _MARIADB_DETAILS:
        if key != "table" and detail in value:
            node.details.append(f"{detail}: {_plain(value[detail])}")
    for child_key, child in value.items():
        if isinstance(child, dict) and (child_key in _MARIADB_STEPS or _looks_like_step(child)):
            node.children.append(_maria_step(child_key, child))
        elif isinstance(child, list) and child_key in _MARIADB_LISTS:
            group = PlanNode(label=_MARIADB_LISTS[child_key])
            for item in child:
                if isinstance(item, dict):
                    for item_key, item_value in item.items():
                        if isinstance(item_value, dict):
                            group.children.append(_maria_step(item_key, item_value))
            _maria_fill_times(group, None, inclusive=False)
            node.children.append(group)
    _maria_fill_times(node, _maria_time(value), inclusive=key == "query_block")
    return node


def _maria_table(value: dict[str, Any]) -> PlanNode:
    if "table_name" not in value:
        return PlanNode(label=str(value.get("message", "Table")))
    name = str(value["table_name"])
    access = str(value.get("access_type", "?"))
    label = f"{_MARIADB_ACCESS.get(access, access)} on {name}"
    if value.get("key"):
        label += f" using {value['key']}"
    loops = _number(value.get("r_loops"))
    node = PlanNode(
        label=label,
        relation=name,
        estimated_rows=_number(value.get("rows")),
        actual_rows=_number(value.get("r_rows")),
        loops=loops,
    )
    for detail in ("used_key_parts", "ref", "attached_condition"):
        if detail in value:
            node.details.append(f"{detail}: {_plain(value[detail])}")
    if "filtered" in value:
        kept = f"filtered: {value['filtered']}%"
        actual = _number(value.get("r_filtered"))
        if actual is not None:
            kept += f" planned, {round(actual, 3)}% actual"
        node.details.append(kept)
    if access in ("ALL", "hash_ALL"):
        node.full_scan = True
        if node.actual_rows is not None:
            node.rows_read = node.actual_rows * (loops or 1)
        else:
            node.rows_read = node.estimated_rows
    return node


def _looks_like_step(value: dict[str, Any]) -> bool:
    return any(key in value for key in ("table", "query_block", "nested_loop", "table_name"))


def _maria_time(value: dict[str, Any]) -> float | None:
    total = _number(value.get("r_total_time_ms"))
    if total is not None:
        return total
    parts = [_number(value.get(key)) for key in ("r_table_time_ms", "r_other_time_ms")]
    known = [part for part in parts if part is not None]
    return sum(known) if known else None


def _maria_fill_times(node: PlanNode, own: float | None, *, inclusive: bool) -> None:
    # A query block's r_total_time_ms covers everything in it; a table's or a
    # sort's time is its own work only, so children are added to it.
    below = sum(child.time_ms or 0.0 for child in node.children)
    timed = own is not None or any(child.time_ms is not None for child in node.children)
    if inclusive:
        if own is not None:
            node.time_ms = _round(own)
            node.self_ms = _round(max(own - below, 0.0))
        elif timed:
            node.time_ms = _round(below)
    elif timed:
        node.time_ms = _round((own or 0.0) + below)
        if own is not None:
            node.self_ms = _round(own)


# --- MySQL 8 -------------------------------------------------------------------

_MYSQL_LINE = re.compile(
    r"^(?P<indent> *)-> (?P<label>.*?)(?P<rest>(?:  \(cost=| \(actual|  \(rows=| \(never).*)?$"
)
_MYSQL_COST = re.compile(
    r"\(cost=[\d.e+-]+(?:\.\.[\d.e+-]+)? rows=(?P<rows>[\d.e+-]+)\)|\(rows=(?P<rows2>[\d.e+-]+)\)"
)
_MYSQL_ACTUAL = re.compile(
    r"\(actual time=(?P<first>[\d.e+-]+)\.\.(?P<last>[\d.e+-]+) rows=(?P<rows>[\d.e+-]+) loops=(?P<loops>\d+)\)"
)
_MYSQL_TABLE = re.compile(r"\bon (?P<table>[`\w.$]+)")


def parse_mysql_tree(text: str) -> PlanNode:
    """MySQL 8 ``EXPLAIN ANALYZE`` / ``EXPLAIN FORMAT=TREE`` text -> tree."""
    root = PlanNode(label="Query")
    stack: list[tuple[int, PlanNode]] = [(-1, root)]
    for line in text.splitlines():
        match = _MYSQL_LINE.match(line)
        if not match:
            if line.strip() and len(stack) > 1:
                stack[-1][1].details.append(line.strip())
            continue
        depth = len(match.group("indent")) // 4
        label = match.group("label").strip()
        rest = match.group("rest") or ""
        node = PlanNode(label=label)
        table = _MYSQL_TABLE.search(label)
        if table and ("scan" in label.lower() or "lookup" in label.lower()):
            node.relation = table.group("table").strip("`")
        cost = _MYSQL_COST.search(rest)
        if cost:
            node.estimated_rows = _number(cost.group("rows") or cost.group("rows2"))
        actual = _MYSQL_ACTUAL.search(rest)
        if actual:
            node.actual_rows = float(actual.group("rows"))
            node.loops = float(actual.group("loops"))
            node.time_ms = _round(float(actual.group("last")) * node.loops)
        if label.startswith("Table scan on"):
            node.full_scan = True
            node.rows_read = (
                node.actual_rows * (node.loops or 1)
                if node.actual_rows is not None
                else node.estimated_rows
            )
        while stack and stack[-1][0] >= depth:
            stack.pop()
        stack[-1][1].children.append(node)
        stack.append((depth, node))
    for _, node in list(root.walk()):
        if node is not root and node.time_ms is not None:
            below = sum(child.time_ms or 0.0 for child in node.children)
            node.self_ms = _round(max(node.time_ms - below, 0.0))
    if len(root.children) == 1:
        return root.children[0]
    return root


# --- SQLite ----------------------------------------------------------------------


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


# --- running -------------------------------------------------------------------


class _Failure(Exception):
    """A message for the user instead of a plan."""


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
    params = _params(query.params)
    runner = _RUNNERS.get(vendor, _run_other)
    try:
        runner(connection, verdict, params, timeout, result)
    except _Failure as failure:
        result.error = str(failure)
    except Exception as exc:
        result.error = _describe_error(exc, timeout)
        if not isinstance(exc, _database_errors()):
            logger.exception("querylens could not explain query %s on %r", query.index, alias)
    if result.plan is not None and not result.error:
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


def _params(params: Any) -> Any:
    # JSON turned tuples into lists; drivers take either. None stays None so
    # a literal "%" in SQL run without parameters is not read as a placeholder.
    if isinstance(params, (list, dict)) or params is None:
        return params
    return [params]


def _database_errors() -> tuple[type[BaseException], ...]:
    from django.db import DatabaseError

    return (DatabaseError,)


def _describe_error(exc: BaseException, timeout: int) -> str:
    text = str(exc).strip() or type(exc).__name__
    cause = exc.__cause__
    code = getattr(cause, "sqlstate", None)
    args = getattr(cause, "args", None) or getattr(exc, "args", ())
    if (
        code == "57014"
        or "statement timeout" in text
        or (args and args[0] == 1969)
        or "max_statement_time" in text
        or "maximum statement execution time" in text.lower()
    ):
        return (
            f"EXPLAIN was stopped by the {timeout} ms timeout "
            f"(QUERYLENS['EXPLAIN_TIMEOUT_MS']): {text}"
        )
    return f"EXPLAIN failed: {type(exc).__name__}: {text}"


def _rolled_back(connection: Any, body: Callable[[Any], None]) -> None:
    """Run ``body(cursor)`` in a transaction or savepoint that is always undone."""
    from django.db import transaction

    with transaction.atomic(using=connection.alias):
        with connection.cursor() as cursor:
            body(cursor)
        transaction.set_rollback(True, using=connection.alias)


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

    _rolled_back(connection, body)
    result.read_only = True
    result.analyzed = analyze
    result.plan, result.plan_text = parse_postgres(output[0])


def _run_mariadb(
    connection: Any, verdict: Verdict, params: Any, timeout: int, result: ExplainResult
) -> None:
    analyze = verdict.mode is Mode.ANALYZE
    # SET TRANSACTION only takes effect before the transaction starts, so not
    # when the caller is inside one already (ATOMIC_REQUESTS, a test case);
    # and MariaDB refuses to even plan a write in a read-only transaction.
    read_only = analyze and _outside_transaction(connection)
    command = "ANALYZE FORMAT=JSON" if analyze else "EXPLAIN FORMAT=JSON"
    seconds = f"{timeout / 1000:.3f}"
    output: list[Any] = []

    def body(cursor: Any) -> None:
        if read_only:
            cursor.execute("SET TRANSACTION READ ONLY")
        cursor.execute(
            f"SET STATEMENT max_statement_time={seconds} FOR {command} {verdict.sql}", params
        )
        output.append(cursor.fetchone()[0])

    _rolled_back(connection, body)
    result.read_only = read_only
    result.analyzed = analyze
    text = output[0].decode() if isinstance(output[0], bytes) else str(output[0])
    result.plan = parse_mariadb(text)
    result.plan_text = text


def _run_mysql(
    connection: Any, verdict: Verdict, params: Any, timeout: int, result: ExplainResult
) -> None:
    version = tuple(getattr(connection, "mysql_version", (0, 0, 0)))
    analyze = verdict.mode is Mode.ANALYZE and version >= (8, 0, 18)
    read_only = analyze and _outside_transaction(connection)
    if analyze:
        command = "EXPLAIN ANALYZE"
    elif version >= (8, 0, 16):
        command = "EXPLAIN FORMAT=TREE"
    else:
        raise _Failure(f"EXPLAIN of this query needs MySQL 8.0.16 or later (this is {version}).")
    output: list[Any] = []

    def body(cursor: Any) -> None:
        if read_only:
            cursor.execute("SET TRANSACTION READ ONLY")
        cursor.execute("SELECT @@SESSION.max_execution_time")
        previous = int(cursor.fetchone()[0])
        # max_execution_time bounds read-only SELECTs, which is all ANALYZE runs.
        cursor.execute(f"SET SESSION max_execution_time = {timeout:d}")
        try:
            cursor.execute(f"{command} {verdict.sql}", params)
            output.append(cursor.fetchone()[0])
        finally:
            cursor.execute(f"SET SESSION max_execution_time = {previous:d}")

    _rolled_back(connection, body)
    result.read_only = read_only
    result.analyzed = analyze
    result.plan_text = str(output[0])
    result.plan = parse_mysql_tree(result.plan_text)
    if verdict.mode is Mode.ANALYZE and not analyze:
        result.note = "Not analyzed: EXPLAIN ANALYZE needs MySQL 8.0.18 or later."


def _run_sqlite(
    connection: Any, verdict: Verdict, params: Any, timeout: int, result: ExplainResult
) -> None:
    output: list[Sequence[Any]] = []

    def body(cursor: Any) -> None:
        cursor.execute(f"EXPLAIN QUERY PLAN {verdict.sql}", params)
        output.extend(cursor.fetchall())

    _rolled_back(connection, body)
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
        raise _Failure(f"EXPLAIN is not supported on {connection.display_name}.")
    prefix = connection.ops.explain_query_prefix()
    output: list[Sequence[Any]] = []

    def body(cursor: Any) -> None:
        cursor.execute(f"{prefix} {verdict.sql}", params)
        output.extend(cursor.fetchall())

    _rolled_back(connection, body)
    result.analyzed = False
    result.plan_text = "\n".join(" ".join(str(value) for value in row) for row in output)
    result.note = f"Not analyzed: querylens runs a plain EXPLAIN on {connection.display_name}."


def _outside_transaction(connection: Any) -> bool:
    return not connection.in_atomic_block and bool(connection.get_autocommit())


_RUNNERS: dict[str, Callable[[Any, Verdict, Any, int, ExplainResult], None]] = {
    "postgresql": _run_postgresql,
    "mariadb": _run_mariadb,
    "mysql": _run_mysql,
    "sqlite": _run_sqlite,
}


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
