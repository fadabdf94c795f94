"""Which statements may be explained, and which may be analyzed (run).

The vendor-neutral part, on the SQL text alone. What only the database can
tell (is this function volatile, is this name a view) is checked by each
vendor's module before ANALYZE.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlparse import lexer
from sqlparse import tokens as T

from querylens.fingerprint import statement_kind

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
#: transaction (sequence values, session locks, other backends, other
#: servers, files, settings, notifications), or that only make EXPLAIN wait.
#: Called anywhere in a statement (directly, or through a function or a view
#: the vendor's check follows), they keep it from running.
DENIED_FUNCTIONS = frozenset(
    [
        # PostgreSQL
        "nextval",
        "setval",
        "pg_terminate_backend",
        "pg_cancel_backend",
        "pg_reload_conf",
        "pg_rotate_logfile",
        "pg_notify",
        "set_config",
        "pg_sleep",
        "pg_sleep_for",
        "pg_sleep_until",
        "pg_switch_wal",
        "pg_promote",
        "pg_import_system_collations",
        "txid_current",
        "pg_current_xact_id",
        "pg_export_snapshot",
        "dblink",
        # MariaDB / MySQL
        "get_lock",
        "release_lock",
        "release_all_locks",
        "sleep",
        "benchmark",
        "load_file",
        "master_pos_wait",
        "master_gtid_wait",
        "source_pos_wait",
        "wait_for_executed_gtid_set",
        "sys_exec",
        "sys_eval",
        "lastval",
    ]
)
DENIED_PREFIXES = (
    "pg_advisory_",
    "pg_try_advisory_",
    "dblink_",
    "lo_",
    "postgres_fdw",
    "pg_stat_reset",
    "pg_read_",
    "pg_ls_",
    "pg_file_",
    "pg_stat_file",
    "pg_backup_",
    "pg_create_",
    "pg_drop_",
    "pg_replication_",
    "pg_logical_",
    "pg_wal_replay_",
)


def denied(name: str) -> bool:
    """Whether calling the function ``name`` may act outside the transaction."""
    lowered = name.lower()
    return lowered in DENIED_FUNCTIONS or lowered.startswith(DENIED_PREFIXES)


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
    unsafe = sorted(name for name in function_names(statement) if denied(name))
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


def function_names(sql: str) -> Iterator[str]:
    """Unquoted words followed by ``(``: the functions a statement calls."""
    previous: str | None = None
    for ttype, value in _tokens(sql):
        if ttype in T.Whitespace or ttype in T.Comment:
            continue
        if value == "(" and previous is not None:
            yield previous
        previous = value if _is_word(ttype, value) else None
