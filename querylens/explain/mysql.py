"""MariaDB (``ANALYZE FORMAT=JSON``) and MySQL 8 (``EXPLAIN ANALYZE``)."""

from __future__ import annotations

import json
import re
from typing import Any

from querylens.explain.base import Failure, database_errors, outside_transaction, rolled_back
from querylens.explain.plan import ExplainResult, PlanNode, _number, _plain, _round
from querylens.explain.safety import Mode, Verdict, denied

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


# --- what a statement calls (MariaDB and MySQL) -------------------------------------

#: ``/*! ... */`` and ``/*M! ... */``: comments whose contents the server runs.
_EXECUTABLE_COMMENT = re.compile(r"/\*M?!")
_SEQUENCE = re.compile(
    r"\b(?:NEXT|PREVIOUS)\s+VALUE\s+FOR\b|\b(?:NEXTVAL|LASTVAL|SETVAL)\s*\(", re.IGNORECASE
)
_CALL = re.compile(r"(?:`((?:[^`]|``)+)`|\b([A-Za-z_][A-Za-z0-9_$]*))\s*\(")
_IDENTIFIER = re.compile(r"`((?:[^`]|``)+)`|\b([A-Za-z_][A-Za-z0-9_$]*)\b")
#: Words never worth looking up as a view's name.
_KEYWORDS = frozenset(
    [
        "select",
        "from",
        "where",
        "and",
        "or",
        "not",
        "in",
        "is",
        "null",
        "like",
        "between",
        "as",
        "on",
        "join",
        "left",
        "right",
        "inner",
        "outer",
        "cross",
        "group",
        "order",
        "by",
        "having",
        "limit",
        "offset",
        "union",
        "all",
        "distinct",
        "case",
        "when",
        "then",
        "else",
        "end",
        "asc",
        "desc",
        "insert",
        "into",
        "values",
        "update",
        "set",
        "delete",
        "exists",
        "true",
        "false",
        "interval",
        "dual",
        "for",
        "lock",
        "share",
        "straight_join",
        "using",
        "natural",
        "with",
        "recursive",
    ]
)
_MAX_DEPTH = 4


def _names(pattern: re.Pattern[str], text: str) -> set[str]:
    return {
        (quoted.replace("``", "`") if quoted else bare) for quoted, bare in pattern.findall(text)
    }


def _refuse(reason: str) -> Failure:
    return Failure(f"This query is not explained: {reason}")


def check_mysql_statement(cursor: Any, sql: str) -> str | None:
    """Refuse what even a plain EXPLAIN could run; say why ANALYZE must not run.

    MariaDB evaluates constant subqueries while it plans, even for a plain
    EXPLAIN of a DELETE, so anything that acts outside the transaction keeps
    the statement from being explained at all: an executable comment,
    a sequence (``NEXT VALUE FOR``, ``NEXTVAL()``...), a denied function
    (locks, sleeps, files), a stored or loadable function, or any of those
    inside a view it reads. A view alone only rules out ANALYZE: its
    definition is checked, but querylens does not follow what it reads.

    Returns the reason ANALYZE must not run, or None.
    """
    texts = [sql]
    seen_views: set[str] = set()
    view_reason: str | None = None
    for _depth in range(_MAX_DEPTH):
        if not texts:
            break
        calls: set[str] = set()
        identifiers: set[str] = set()
        for text in texts:
            if _EXECUTABLE_COMMENT.search(text):
                raise _refuse(
                    "it contains an executable comment (/*! or /*M!), whose contents the "
                    "server runs."
                )
            if _SEQUENCE.search(text):
                raise _refuse(
                    "it takes a value from a sequence, which a rollback does not give back."
                )
            calls |= _names(_CALL, text)
            identifiers |= {
                name for name in _names(_IDENTIFIER, text) if name.lower() not in _KEYWORDS
            }
        for name in sorted(calls):
            if denied(name):
                raise _refuse(f"it calls {name}(), whose effect a rollback would not undo.")
        stored = _stored_functions(cursor, calls)
        if stored:
            raise _refuse(
                f"it calls the stored function {stored[0]}(), which the server may run "
                "even while it only plans the statement, and which can change anything."
            )
        texts = []
        for name, definition in _views(cursor, identifiers - seen_views):
            seen_views.add(name)
            if not definition:
                raise _refuse(f"it reads the view {name}, whose definition cannot be read here.")
            view_reason = view_reason or (
                f"It reads the view {name}: querylens does not analyze what a view runs."
            )
            texts.append(definition)
    return view_reason


def _stored_functions(cursor: Any, names: set[str]) -> list[str]:
    if not names:
        return []
    marks = ", ".join(["%s"] * len(names))
    cursor.execute(
        "SELECT ROUTINE_NAME FROM information_schema.ROUTINES "
        f"WHERE ROUTINE_TYPE = 'FUNCTION' AND ROUTINE_NAME IN ({marks})",
        sorted(names),
    )
    found = sorted(str(row[0]) for row in cursor.fetchall())
    try:
        # Loadable (UDF) functions live in mysql.func; not every user may read it.
        cursor.execute(f"SELECT name FROM mysql.func WHERE name IN ({marks})", sorted(names))
        found += sorted(str(row[0]) for row in cursor.fetchall())
    except database_errors():
        pass
    return found


def _views(cursor: Any, names: set[str]) -> list[tuple[str, str]]:
    if not names:
        return []
    marks = ", ".join(["%s"] * len(names))
    cursor.execute(
        "SELECT TABLE_NAME, VIEW_DEFINITION FROM information_schema.VIEWS "
        f"WHERE TABLE_NAME IN ({marks})",
        sorted(names),
    )
    return [(str(name), str(definition or "")) for name, definition in cursor.fetchall()]


# --- running -------------------------------------------------------------------------


class _Plan:
    """Whether this EXPLAIN analyzes, and why not when the statement check says no."""

    def __init__(self, analyze: bool, read_only: bool) -> None:
        self.analyze = analyze
        self.read_only = read_only
        self.why_not: str | None = None

    def prepare(self, cursor: Any, sql: str) -> None:
        """Read-only where possible, then the statement check (which may refuse)."""
        if self.read_only:
            cursor.execute("SET TRANSACTION READ ONLY")
        reason = check_mysql_statement(cursor, sql)
        if reason is not None and self.analyze:
            self.analyze = False
            self.why_not = reason

    def report(self, result: ExplainResult) -> None:
        result.read_only = self.read_only
        result.analyzed = self.analyze
        if self.why_not is not None:
            result.note = f"Not analyzed. {self.why_not}"


def _run_mariadb(
    connection: Any, verdict: Verdict, params: Any, timeout: int, result: ExplainResult
) -> None:
    analyze = verdict.mode is Mode.ANALYZE
    # SET TRANSACTION only takes effect before the transaction starts, so not
    # when the caller is inside one already (ATOMIC_REQUESTS, a test case);
    # and MariaDB refuses to even plan a write in a read-only transaction.
    plan = _Plan(analyze, read_only=analyze and outside_transaction(connection))
    seconds = f"{timeout / 1000:.3f}"
    output: list[Any] = []

    def body(cursor: Any) -> None:
        plan.prepare(cursor, verdict.sql)
        command = connection.ops.explain_query_prefix("JSON", analyze=plan.analyze)
        cursor.execute(
            f"SET STATEMENT max_statement_time={seconds} FOR {command} {verdict.sql}", params
        )
        output.append(cursor.fetchone()[0])

    rolled_back(connection, body)
    plan.report(result)
    text = output[0].decode() if isinstance(output[0], bytes) else str(output[0])
    result.plan = parse_mariadb(text)
    result.plan_text = text


def _run_mysql(
    connection: Any, verdict: Verdict, params: Any, timeout: int, result: ExplainResult
) -> None:
    version = tuple(getattr(connection, "mysql_version", (0, 0, 0)))
    features = connection.features
    # Django 6.1 dropped the flag: the MySQL versions it supports (8.4+) all
    # have EXPLAIN ANALYZE.
    can_analyze = getattr(features, "supports_explain_analyze", True)
    analyze = verdict.mode is Mode.ANALYZE and can_analyze
    if not analyze and "TREE" not in features.supported_explain_formats:
        raise Failure(f"EXPLAIN of this query needs MySQL 8.0.16 or later (this is {version}).")
    plan = _Plan(analyze, read_only=analyze and outside_transaction(connection))
    output: list[Any] = []

    def body(cursor: Any) -> None:
        plan.prepare(cursor, verdict.sql)
        # Django's prefix: EXPLAIN ANALYZE, else EXPLAIN FORMAT=TREE.
        command = connection.ops.explain_query_prefix(analyze=plan.analyze)
        cursor.execute("SELECT @@SESSION.max_execution_time")
        previous = int(cursor.fetchone()[0])
        # max_execution_time bounds read-only SELECTs, which is all ANALYZE runs.
        cursor.execute(f"SET SESSION max_execution_time = {timeout:d}")
        try:
            cursor.execute(f"{command} {verdict.sql}", params)
            output.append(cursor.fetchone()[0])
        finally:
            cursor.execute(f"SET SESSION max_execution_time = {previous:d}")

    rolled_back(connection, body)
    plan.report(result)
    result.plan_text = str(output[0])
    result.plan = parse_mysql_tree(result.plan_text)
    if verdict.mode is Mode.ANALYZE and not can_analyze:
        result.note = "Not analyzed: EXPLAIN ANALYZE needs MySQL 8.0.18 or later."
