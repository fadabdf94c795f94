"""Normalise SQL so that queries of the same shape share one fingerprint.

Pure standard library on purpose: this runs for every captured query, so it
must stay cheap, must not import Django, and must never raise.

Normalisation rules (``normalize``):

* ``-- ...`` and ``/* ... */`` comments are removed; any run of whitespace
  becomes one space and the ends are trimmed. Spacing around ``(``, ``)``
  and ``,`` is made canonical (``f( a ,b )`` -> ``f(a, b)``) so that lists
  written either way compare equal. Spacing around operators is kept as
  written (collapsed), and trailing ``;`` are dropped. ``#`` is not taken
  for a comment: PostgreSQL uses it as an operator.
* Every literal and placeholder becomes ``?``: single-quoted strings (``''``
  and backslash escapes, ``E''``/``N''``/``B''``/``X''``/``U&''`` prefixes;
  an unterminated one runs to the end; ``'\\'`` alone is one whole string,
  as in Django's ``LIKE %s ESCAPE '\\'`` on SQLite), PostgreSQL
  ``$tag$ ... $tag$`` strings, numbers (decimals, exponents, ``0x`` hex, and
  a unary ``-``/``+`` in front of a number), and the placeholders ``%s``,
  ``%(name)s``, ``?``, ``$1``, ``:name`` (never the ``::`` cast).
* ``TRUE`` and ``FALSE`` are values, so they become ``?`` too. ``NULL`` is
  kept: ``IS NULL`` is part of a query's shape, not a value.
* Digits inside identifiers (``t1``, ``"col2"``, ```col3```) are left alone;
  double-quoted and backtick-quoted identifiers are kept verbatim.
* A fixed set of SQL keywords is upper-cased (a set lookup per word, so
  ``select`` and ``SELECT`` agree); every other word keeps its case (table,
  column and function names), and so does every part of a qualified name
  such as ``t.id`` or ``"shop_book"."id"``.
* ``IN (?, ?, ?)`` (also ``NOT IN``, and lists of row tuples) becomes
  ``IN (...)``; ``VALUES (?, ?), (?, ?)`` becomes ``VALUES (...)``.
  ``NULL`` may appear among the items, and ``DEFAULT`` among ``VALUES`` items.
"""

from __future__ import annotations

import functools
import hashlib
import re

__all__ = ["fingerprint", "is_transaction_control", "normalize", "statement_kind"]

# Terminated quoted identifiers, for qualified names only: these may fail to
# match, so each repetition takes a single character to keep backtracking
# linear.
_DQ = r'"(?:[^"]|"")*"'
_BQ = r"`(?:[^`]|``)*`"
_PART = rf"(?:{_DQ}|{_BQ}|[^\W\d][\w$]*)"

# One match per token, with the whitespace and comments before it in <gap>
# (which halves the loop's iterations). Alternatives are tried in order.
# Inside the stand-alone quoted constructs every repetition is followed by
# something that cannot fail (an optional closing quote), so malformed SQL
# never backtracks badly; "." and <end> guarantee that some token matches.
_TOKEN_RE = re.compile(
    r"(?P<gap>(?:\s+|--[^\n]*|/\*.*?(?:\*/|\Z))*)(?:"
    + "|".join(
        (
            # "shop_book"."id", t.*, schema.table: one token, kept verbatim;
            # the bulk of Django's SQL, so this is worth its own branch.
            rf"(?P<name>{_PART}(?:\.(?:{_PART}|\*))+)",
            # '\' alone is a whole string: SQLite, PostgreSQL and Oracle read
            # it so, and Django's SQLite LIKE lookups end in ESCAPE '\'.
            # Everywhere else a backslash escapes the next character (MySQL).
            r"(?P<string>'\\'(?!')|(?:[EeNnBbXx]|[Uu]&)?'(?:[^'\\]+|\\.?|'')*'?)",
            r"(?P<dollar>\$(?P<tag>(?:[A-Za-z_]\w*)?)\$.*?(?:\$(?P=tag)\$|\Z))",
            r"(?P<quoted>\"(?:[^\"]+|\"\")*\"?|`(?:[^`]+|``)*`?)",
            r"(?P<param>%\([^()]*\)s|%s|\?|\$\d+|(?<![\w:]):(?:[A-Za-z_]\w*|\d+))",
            # The look-ahead keeps "1abc" (a MySQL identifier) out of numbers.
            r"(?P<number>(?:0[xX][0-9A-Fa-f]+|(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)"
            r"(?![\w$]))",
            r"(?P<word>\w[\w$]*)",
            r"(?P<other>::|%%|.)",
            r"(?P<end>\Z)",
        )
    )
    + ")",
    re.DOTALL,
)
_GROUPS = ("name", "string", "dollar", "quoted", "param", "number", "word", "end")
_NAME, _STRING, _DOLLAR, _QUOTED, _PARAM, _NUMBER, _WORD, _END = (
    _TOKEN_RE.groupindex[group] for group in _GROUPS
)
_VALUE_GROUPS = frozenset((_STRING, _DOLLAR, _PARAM, _NUMBER))

_KEYWORDS = frozenset(
    (
        "ABORT",
        "ALL",
        "ALTER",
        "ANALYZE",
        "AND",
        "ANY",
        "AS",
        "ASC",
        "BEGIN",
        "BETWEEN",
        "BY",
        "CALL",
        "CASE",
        "CAST",
        "COLLATE",
        "COMMIT",
        "CONFLICT",
        "CREATE",
        "CROSS",
        "CURRENT_DATE",
        "CURRENT_TIME",
        "CURRENT_TIMESTAMP",
        "DEFAULT",
        "DELETE",
        "DESC",
        "DISTINCT",
        "DO",
        "DROP",
        "DUPLICATE",
        "ELSE",
        "END",
        "ESCAPE",
        "EXCEPT",
        "EXISTS",
        "EXPLAIN",
        "FALSE",
        "FETCH",
        "FILTER",
        "FIRST",
        "FOR",
        "FROM",
        "FULL",
        "GLOB",
        "GROUP",
        "HAVING",
        "ILIKE",
        "IN",
        "INNER",
        "INSERT",
        "INTERSECT",
        "INTERVAL",
        "INTO",
        "IS",
        "ISNULL",
        "JOIN",
        "KEY",
        "LAST",
        "LATERAL",
        "LEFT",
        "LIKE",
        "LIMIT",
        "LOCKED",
        "NATURAL",
        "NEXT",
        "NOT",
        "NOTHING",
        "NOTNULL",
        "NOWAIT",
        "NULL",
        "NULLS",
        "OF",
        "OFFSET",
        "ON",
        "ONLY",
        "OR",
        "ORDER",
        "OUTER",
        "OVER",
        "PARTITION",
        "RECURSIVE",
        "REGEXP",
        "RELEASE",
        "REPLACE",
        "RETURNING",
        "RIGHT",
        "ROLLBACK",
        "ROW",
        "ROWS",
        "SAVEPOINT",
        "SELECT",
        "SET",
        "SHARE",
        "SKIP",
        "SOME",
        "START",
        "THEN",
        "TO",
        "TRANSACTION",
        "TRUE",
        "TRUNCATE",
        "UNION",
        "UPDATE",
        "USING",
        "VALUES",
        "WHEN",
        "WHERE",
        "WINDOW",
        "WITH",
    )
)
_VALUE_KEYWORDS = frozenset(("TRUE", "FALSE"))
# Keywords after which a "-" is binary (``CASE ... END - 1``).
_OPERAND_KEYWORDS = frozenset(("NULL", "END", "CURRENT_DATE", "CURRENT_TIME", "CURRENT_TIMESTAMP"))

# Django writes long parameter lists as exactly "IN (%s, %s, ...)" and
# "VALUES (%s, %s), (%s, %s)". Shrinking them before tokenising keeps
# ``pk__in`` with thousands of ids cheap; the result is the same because the
# final pass collapses any list anyway. No newline is allowed inside a match,
# so it can never swallow the end of a ``--`` comment.
_DJANGO_IN_RE = re.compile(r"(?<![\w$])IN \(%s(?:, %s)+\)")
_DJANGO_ROW = r"\(%s(?:, %s)*\)"
_DJANGO_VALUES_RE = re.compile(rf"(?<![\w$])VALUES {_DJANGO_ROW}(?:, {_DJANGO_ROW})+")

_IN_ITEM = r"(?:\?|NULL|\(\?(?:, \?)*\))"
_VALUES_ITEM = r"(?:\?|NULL|DEFAULT)"
_VALUES_ROW = rf"\({_VALUES_ITEM}(?:, {_VALUES_ITEM})*\)"
# Runs on normalised text, where strings are already "?", so the only quoted
# text left is identifiers; matching them first keeps their content intact.
_COLLAPSE_RE = re.compile(
    r"(?P<quoted>\"(?:[^\"]+|\"\")*\"?|`(?:[^`]+|``)*`?)"
    rf"|(?<![\w$])(?P<in>IN) ?\({_IN_ITEM}(?:, {_IN_ITEM})*\)"
    rf"|(?<![\w$])(?P<values>VALUES) ?{_VALUES_ROW}(?:, {_VALUES_ROW})*"
)

_LEADING_RE = re.compile(r"(?:\s+|--[^\n]*|/\*.*?(?:\*/|\Z)|\()*(?P<word>[A-Za-z_]\w*)?", re.DOTALL)
_KINDS = frozenset(
    (
        "abort",
        "alter",
        "analyze",
        "begin",
        "call",
        "commit",
        "copy",
        "create",
        "deallocate",
        "declare",
        "delete",
        "describe",
        "do",
        "drop",
        "end",
        "execute",
        "explain",
        "fetch",
        "grant",
        "insert",
        "lock",
        "merge",
        "pragma",
        "prepare",
        "release",
        "replace",
        "reset",
        "revoke",
        "rollback",
        "savepoint",
        "select",
        "set",
        "show",
        "start",
        "table",
        "truncate",
        "update",
        "vacuum",
        "values",
        "with",
    )
)
_TRANSACTION_KINDS = frozenset(
    ("abort", "begin", "commit", "end", "release", "rollback", "savepoint")
)

_CACHE_SIZE = 4096
# Statements longer than this are cached under a digest of their text rather
# than the text itself, so the cache's memory stays bounded even when huge
# statements repeat (a wide select_related in a loop).
_LONG_SQL = 2048
_LONG_CACHE_SIZE = 1024
_long_cache: dict[bytes, str] = {}
_HEAD_LEN = 256


def _as_text(sql: object) -> str:
    # Typed as str everywhere, but a raw cursor may hand us bytes or a
    # driver's SQL object; querylens must never break the request over it.
    if isinstance(sql, str):
        # A subclass (Django's SafeString) is copied to a plain str so the
        # caches hold plain keys.
        return sql if type(sql) is str else str.__str__(sql)
    if isinstance(sql, (bytes, bytearray, memoryview)):
        return bytes(sql).decode("utf-8", "replace")
    try:
        return str(sql)
    except Exception:
        return ""


def _emit(out: list[str], token: str, space: bool) -> None:
    # No space after "(" nor before ")" or ",": "f( a ,b )" == "f(a, b)".
    if space and out and out[-1] != "(" and token != ")" and token != ",":
        out.append(" ")
    out.append(token)


def _normalize(sql: str) -> str:
    if "%s, %s" in sql:  # a plain substring test is far cheaper than the scans
        sql = _DJANGO_IN_RE.sub("IN (%s)", sql)
        sql = _DJANGO_VALUES_RE.sub("VALUES (%s)", sql)
    out: list[str] = []
    append = out.append
    space = False  # whitespace or a comment since the last token
    operand = False  # the last token ends an operand, so a "-" now is binary
    after_dot = False
    sign = ""  # a unary sign waiting to see whether a number follows
    sign_space = False
    for match in _TOKEN_RE.finditer(sql):
        # <gap> always takes part, so lastindex is the token's group.
        kind = match.lastindex or _END
        if kind == _END:
            break
        if match.group(1):
            space = True
        if kind in _VALUE_GROUPS:
            if sign and kind == _NUMBER:
                sign = ""
                space = sign_space
            token, value = "?", True
        elif kind in (_NAME, _QUOTED):
            token, value = match.group(kind), True
        elif kind == _WORD:
            token = match.group(kind)
            upper = token.upper()
            if after_dot or upper not in _KEYWORDS:
                value = True
            elif upper in _VALUE_KEYWORDS:
                token, value = "?", True
            else:
                token, value = upper, upper in _OPERAND_KEYWORDS
        else:
            token = match.group(kind)
            if (token == "-" or token == "+") and not operand:
                if sign:
                    _emit(out, sign, sign_space)
                sign, sign_space, space = token, space, False
                continue
            value = token == ")" or token == "]"
        if sign:
            _emit(out, sign, sign_space)
            sign = ""
        # _emit inlined: this line runs once per token.
        if space and out and out[-1] != "(" and token != ")" and token != ",":
            append(" ")
        append(token)
        operand = value
        after_dot = token == "."
        space = token == ","
    if sign:
        _emit(out, sign, sign_space)
    while out and out[-1] in (";", " "):
        out.pop()
    normalized = "".join(out)
    # Every list _COLLAPSE_RE shrinks opens with one of these; testing for
    # them first spares "INNER JOIN" SQL a callback per quoted identifier.
    if "(?" in normalized or "(NULL" in normalized or "(DEFAULT" in normalized:
        normalized = _COLLAPSE_RE.sub(_collapse, normalized)
    return normalized


def _collapse(match: re.Match[str]) -> str:
    group = match.lastgroup
    if group == "in":
        return "IN (...)"
    if group == "values":
        return "VALUES (...)"
    return match.group()


def normalize(sql: str) -> str:
    """Return ``sql`` with comments, spacing, literals and lists normalised.

    See the module docstring for the exact rules. Never raises.
    """
    return _normalize(_as_text(sql))


def _digest(normalized: str) -> str:
    data = normalized.encode("utf-8", "surrogatepass")
    return hashlib.blake2b(data, digest_size=8).hexdigest()


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _fingerprint_short(sql: str) -> str:
    return _digest(_normalize(sql))


def _fingerprint_long(sql: str) -> str:
    key = hashlib.blake2b(sql.encode("utf-8", "surrogatepass"), digest_size=16).digest()
    found = _long_cache.get(key)
    if found is None:
        found = _digest(_normalize(sql))
        # Dropping everything when full is crude but lock-free and bounded.
        if len(_long_cache) >= _LONG_CACHE_SIZE:
            _long_cache.clear()
        _long_cache[key] = found
    return found


def fingerprint(sql: str) -> str:
    """Return 16 hex characters identifying the shape of ``sql``.

    Two statements get the same fingerprint when ``normalize`` makes them
    equal. Results are cached by the raw SQL text. Never raises.
    """
    if type(sql) is not str:
        sql = _as_text(sql)
    if len(sql) <= _LONG_SQL:
        return _fingerprint_short(sql)
    return _fingerprint_long(sql)


def _scan_leading(sql: str) -> tuple[str, str, int]:
    # Every part of the pattern is optional, so both matches always succeed.
    first = _LEADING_RE.match(sql)
    word = first.group("word") if first else None
    if first is None or word is None:
        return "", "", len(sql) if first is None else first.end()
    second = _LEADING_RE.match(sql, first.end())
    if second is None:
        return word.lower(), "", first.end()
    return word.lower(), (second.group("word") or "").lower(), second.end()


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _leading_words(head: str) -> tuple[str, str, int]:
    return _scan_leading(head)


def _first_two_words(sql: str) -> tuple[str, str]:
    sql = _as_text(sql)
    head = sql[:_HEAD_LEN]
    first, second, end = _leading_words(head)
    if end >= len(head) and len(sql) > len(head):
        # The prefix may have cut a word or a long leading comment short.
        first, second, end = _scan_leading(sql)
    return first, second


def statement_kind(sql: str) -> str:
    """Return the statement's first keyword, lower-cased, e.g. ``"select"``.

    Leading comments, whitespace and parentheses are skipped. Unknown or
    missing keywords give ``"other"``. Never raises.
    """
    first, _second = _first_two_words(sql)
    return first if first in _KINDS else "other"


_PLAIN_STATEMENTS = ("SELECT ", "INSERT ", "UPDATE ", "DELETE ", "WITH ")


def is_transaction_control(sql: str) -> bool:
    """Tell whether ``sql`` only manages a transaction or savepoint.

    ``BEGIN``, ``START TRANSACTION``, ``COMMIT``/``END``, ``ROLLBACK``/``ABORT``
    (also ``ROLLBACK TO SAVEPOINT``), ``SAVEPOINT``, ``RELEASE``,
    ``SET TRANSACTION ...`` and ``SET AUTOCOMMIT ...``. These are never N+1s.
    """
    if sql.__class__ is str and sql.startswith(_PLAIN_STATEMENTS):
        return False  # the ORM's own statements, by far the most common
    first, second = _first_two_words(sql)
    if first in _TRANSACTION_KINDS:
        return True
    if first == "start":
        return second == "transaction"
    if first == "set":
        return second == "transaction" or second == "autocommit"
    return False
