"""What every vendor's runner shares: the rolled-back transaction, errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Failure(Exception):
    """A message for the user instead of a plan."""


def params_for(params: Any) -> Any:
    # JSON turned tuples into lists; drivers take either. None stays None so
    # a literal "%" in SQL run without parameters is not read as a placeholder.
    if isinstance(params, (list, dict)) or params is None:
        return params
    return [params]


def database_errors() -> tuple[type[BaseException], ...]:
    from django.db import DatabaseError

    return (DatabaseError,)


def describe_error(exc: BaseException, timeout: int) -> str:
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


def rolled_back(connection: Any, body: Callable[[Any], None]) -> None:
    """Run ``body(cursor)`` in a transaction or savepoint that is always undone."""
    from django.db import transaction

    with transaction.atomic(using=connection.alias):
        with connection.cursor() as cursor:
            body(cursor)
        transaction.set_rollback(True, using=connection.alias)


def outside_transaction(connection: Any) -> bool:
    return not connection.in_atomic_block and bool(connection.get_autocommit())
