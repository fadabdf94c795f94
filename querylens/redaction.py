"""Secrets are replaced by ``[redacted]`` before a record is kept.

What counts as a secret:

* every parameter of a query on a table that holds secrets as a whole
  (Django's sessions, the API token tables of common packages);
* a parameter, or a literal written into the SQL, compared with or assigned
  to a column whose name contains a sensitive word (``password``, ``token``,
  ``secret``, ``session_key``, ``api_key``, ...);
* those same values wherever a database error message echoes them.

Redaction runs when the record is built, after fingerprints, duplicates and
N+1 groups were computed from the real values, so it changes no verdict.
The decision is made once per SQL text and cached: a query that touches no
sensitive name costs one dictionary lookup.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from querylens.conf import conf

REDACTED = "[redacted]"

#: Words that make a column sensitive when its name contains one of them.
DEFAULT_COLUMNS = (
    "password",
    "passwd",
    "secret",
    "token",
    "session_key",
    "session_data",
    "api_key",
    "apikey",
    "private_key",
)
#: Tables whose every parameter is a secret or leads to one.
DEFAULT_TABLES = (
    "django_session",
    "authtoken_token",  # Django REST framework
    "knox_authtoken",  # django-rest-knox
    "oauth2_provider_accesstoken",  # django-oauth-toolkit
    "oauth2_provider_refreshtoken",
    "oauth2_provider_idtoken",
    "oauth2_provider_grant",
    "rest_framework_api_key_apikey",  # djangorestframework-api-key
    "otp_static_statictoken",  # django-otp
    "otp_totp_totpdevice",
    "django_rest_passwordreset_resetpasswordtoken",
)

_TOKEN = re.compile(
    r"""
    (?P<string>'(?:[^']|'')*'?)
    |(?P<quoted>"(?:[^"]|"")*"|`(?:[^`]|``)*`|\[[^\]]*\])
    |(?P<escaped>%%)
    |(?P<placeholder>%s|%\((?P<name>[^()]*)\)s)
    |(?P<number>\b\d+(?:\.\d+)?(?:[eE][-+]?\d+)?\b)
    |(?P<word>[A-Za-z_][A-Za-z0-9_$]*)
    |(?P<comment>--[^\n]*|/\*.*?(?:\*/|$))
    |(?P<cast>::)
    |(?P<other>[^\s])
    """,
    re.VERBOSE | re.DOTALL,
)

#: Keywords after which a value no longer belongs to the column named before.
_RESET = frozenset(
    [
        "SELECT",
        "FROM",
        "WHERE",
        "JOIN",
        "ON",
        "GROUP",
        "ORDER",
        "HAVING",
        "LIMIT",
        "OFFSET",
        "VALUES",
        "RETURNING",
        "SET",
        "UNION",
        "EXCEPT",
        "INTERSECT",
        "WINDOW",
        "FETCH",
    ]
)
#: Keywords that sit between a column and its value: they name no column.
_KEYWORDS = _RESET | frozenset(
    [
        "AND",
        "OR",
        "NOT",
        "IN",
        "IS",
        "NULL",
        "LIKE",
        "ILIKE",
        "BETWEEN",
        "AS",
        "ESCAPE",
        "COLLATE",
        "BINARY",
        "ANY",
        "ALL",
        "SOME",
        "CASE",
        "WHEN",
        "THEN",
        "ELSE",
        "END",
        "TRUE",
        "FALSE",
        "DISTINCT",
        "FROM",
        "ASC",
        "DESC",
        "BY",
        "INTO",
        "UPDATE",
        "INSERT",
        "DELETE",
        "EXISTS",
        "OVERLAPS",
        "SIMILAR",
        "TO",
        "GLOB",
        "REGEXP",
        "RLIKE",
        "MATCH",
        "AGAINST",
        "INTERVAL",
    ]
)


@dataclass(frozen=True)
class Plan:
    """What to redact in every execution of one SQL text."""

    #: Redact every parameter (a sensitive table).
    everything: bool
    #: For each ``%s`` in order: whether its value is a secret.
    positions: tuple[bool, ...]
    #: ``%(name)s`` placeholders whose values are secrets.
    names: frozenset[str]
    #: The SQL with sensitive literals replaced, when it has any.
    sql: str | None

    @property
    def touches_secrets(self) -> bool:
        return self.everything or any(self.positions) or bool(self.names) or self.sql is not None


class Redactor:
    """Redaction with one set of sensitive names, its plans cached by SQL text."""

    max_plans = 4096

    def __init__(self, columns: Iterable[str], tables: Iterable[str]) -> None:
        self.columns = tuple(sorted({c.lower() for c in columns if c}))
        self.tables = tuple(sorted({t.lower() for t in tables if t}))
        self._words = self.columns + self.tables
        self._plans: dict[str, Plan | None] = {}

    def plan(self, sql: str) -> Plan | None:
        """The redaction plan of ``sql``, or None when it touches no secret."""
        try:
            return self._plans[sql]
        except KeyError:
            pass
        lowered = sql.lower()
        plan = None
        if any(word in lowered for word in self._words):
            plan = self._make_plan(sql)
            if not plan.touches_secrets:
                plan = None
        if len(self._plans) >= self.max_plans:
            self._plans.clear()
        self._plans[sql] = plan
        return plan

    def _sensitive_column(self, name: str | None) -> bool:
        if not name:
            return False
        lowered = name.lower()
        return any(word in lowered for word in self.columns)

    def _make_plan(self, sql: str) -> Plan:
        tokens = [
            (m.lastgroup, m.group(), m.start(), m.end(), m.group("name"))
            for m in _TOKEN.finditer(sql)
        ]
        everything = False
        for kind, text, *_ in tokens:
            if kind in ("word", "quoted") and _unquote(text).lower() in self.tables:
                everything = True
                break
        columns = _value_columns(tokens)
        positions: list[bool] = []
        names: set[str] = set()
        literal_spans: list[tuple[int, int]] = []
        for (kind, _text, start, end, name), column in zip(tokens, columns, strict=True):
            secret = self._sensitive_column(column)
            if kind == "placeholder":
                if name is None:
                    positions.append(secret)
                elif secret:
                    names.add(name)
            elif kind in ("string", "number") and (secret or everything):
                literal_spans.append((start, end))
        redacted_sql = None
        if literal_spans:
            parts, last = [], 0
            for start, end in literal_spans:
                parts.append(sql[last:start])
                parts.append(f"'{REDACTED}'")
                last = end
            parts.append(sql[last:])
            redacted_sql = "".join(parts)
        return Plan(everything, tuple(positions), frozenset(names), redacted_sql)

    # -- applying a plan ----------------------------------------------------------

    def sql(self, sql: str) -> str:
        plan = self.plan(sql)
        return plan.sql if plan is not None and plan.sql is not None else sql

    def params(self, sql: str, params: Any, many: bool) -> Any:
        plan = self.plan(sql)
        if plan is None or params is None:
            return params
        if many and isinstance(params, (list, tuple)):
            return [_redact_one(plan, row) for row in params]
        return _redact_one(plan, params)

    def secrets(self, sql: str, params: Any, many: bool) -> list[str]:
        """The text of every secret value among ``params``, longest first."""
        plan = self.plan(sql)
        if plan is None or params is None:
            return []
        rows = params if many and isinstance(params, (list, tuple)) else [params]
        found: set[str] = set()
        for row in rows:
            original = row
            redacted = _redact_one(plan, row)
            for before, after in _pairs(original, redacted):
                if after == REDACTED and before is not None:
                    text = (
                        before.decode(errors="replace")
                        if isinstance(before, bytes)
                        else str(before)
                    )
                    if len(text) >= 3:  # "1" would blot out every digit of a message
                        found.add(text)
        return sorted(found, key=len, reverse=True)

    def error(self, sql: str, params: Any, many: bool, error: str | None) -> str | None:
        """``error`` with every secret value it echoes replaced."""
        if not error:
            return error
        for secret in self.secrets(sql, params, many):
            error = error.replace(secret, REDACTED)
        # Constraint messages name the column beside the value.
        error = _PG_KEY.sub(
            lambda m: (
                f"Key ({m['columns']})=({REDACTED})"
                if self._sensitive_column(m["columns"]) or self._names_table(sql)
                else m.group()
            ),
            error,
        )
        error = _MYSQL_DUPLICATE.sub(
            lambda m: (
                f"Duplicate entry '{REDACTED}' for key '{m['key']}'"
                if self._sensitive_column(m["key"]) or self._names_table(sql)
                else m.group()
            ),
            error,
        )
        return error

    def _names_table(self, text: str) -> bool:
        lowered = text.lower()
        return any(table in lowered for table in self.tables)


_PG_KEY = re.compile(
    r"Key \((?P<columns>[^)]*)\)=\((?P<value>.*?)\)(?= already exists| is not present| conflicts|$)",
    re.MULTILINE,
)
_MYSQL_DUPLICATE = re.compile(r"Duplicate entry '(?P<value>.*)' for key '(?P<key>[^']*)'")


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] in '"`[':
        return text[1:-1]
    return text


def _value_columns(tokens: list[tuple[Any, str, int, int, Any]]) -> list[str | None]:
    """For each token, the column a value there belongs to (None elsewhere)."""
    result: list[str | None] = [None] * len(tokens)
    insert_columns = _insert_columns(tokens)
    if insert_columns is not None:
        columns, first_value = insert_columns
        slot = 0
        depth = 0
        for position in range(first_value, len(tokens)):
            kind, text = tokens[position][0], tokens[position][1]
            if text == "(":
                depth += 1
                if depth == 1:
                    slot = 0
            elif text == ")":
                depth -= 1
            elif text == "," and depth == 1:
                slot += 1
            elif kind in ("placeholder", "string", "number") and depth >= 1 and columns:
                result[position] = columns[slot % len(columns)]
            elif kind == "word" and text.upper() in ("RETURNING", "ON"):
                break
        return result
    last: str | None = None
    after_cast = False
    for position, (kind, text, _start, _end, _name) in enumerate(tokens):
        if kind == "cast":
            after_cast = True
            continue
        if kind == "word":
            upper = text.upper()
            if after_cast:
                pass  # a type name
            elif upper in _RESET:
                last = None
            elif upper not in _KEYWORDS and not _calls(tokens, position):
                last = text
        elif kind == "quoted":
            if not after_cast:
                last = _unquote(text)
        elif kind in ("placeholder", "string", "number"):
            result[position] = last
        elif kind == "other" and text == ";":
            last = None
        after_cast = False
    return result


def _calls(tokens: list[tuple[Any, str, int, int, Any]], position: int) -> bool:
    following = position + 1
    return following < len(tokens) and tokens[following][1] == "("


def _insert_columns(
    tokens: list[tuple[Any, str, int, int, Any]],
) -> tuple[list[str], int] | None:
    """``INSERT INTO t (a, b) VALUES ...``: the column list and where values start."""
    words = [(i, t[1].upper()) for i, t in enumerate(tokens) if t[0] == "word"]
    if not words or words[0][1] not in ("INSERT", "REPLACE"):
        return None
    columns: list[str] = []
    position = 0
    while position < len(tokens) and tokens[position][1] != "(":
        position += 1
    position += 1
    while position < len(tokens) and tokens[position][1] != ")":
        kind, text = tokens[position][0], tokens[position][1]
        if kind in ("quoted", "word"):
            columns.append(_unquote(text))
        position += 1
    for index, upper in words:
        if index > position and upper in ("VALUES", "VALUE", "SELECT"):
            return columns, index + 1
    return None


def _redact_one(plan: Plan, params: Any) -> Any:
    if isinstance(params, dict):
        if plan.everything:
            return {key: REDACTED for key in params}
        return {key: REDACTED if key in plan.names else value for key, value in params.items()}
    if isinstance(params, (list, tuple)):
        if plan.everything:
            return [REDACTED for _ in params]
        positions = plan.positions
        return [
            REDACTED if index < len(positions) and positions[index] else value
            for index, value in enumerate(params)
        ]
    return REDACTED if plan.everything or any(plan.positions) else params


def _pairs(before: Any, after: Any) -> Iterable[tuple[Any, Any]]:
    if isinstance(before, dict) and isinstance(after, dict):
        return ((before[key], after[key]) for key in before)
    if isinstance(before, (list, tuple)) and isinstance(after, list):
        return zip(before, after, strict=True)
    return [(before, after)]


_redactors: dict[tuple[Any, ...], Redactor] = {}


def redactor() -> Redactor | None:
    """The redactor for the current settings, or None when redaction is off."""
    if not conf.REDACT:
        return None
    key = (tuple(conf.REDACT_COLUMNS), tuple(conf.REDACT_TABLES))
    found = _redactors.get(key)
    if found is None:
        if len(_redactors) > 8:  # settings changed many times (tests)
            _redactors.clear()
        found = _redactors[key] = Redactor((*DEFAULT_COLUMNS, *key[0]), (*DEFAULT_TABLES, *key[1]))
    return found
