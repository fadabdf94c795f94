"""SQL formatting (sqlparse) and highlighting (Pygments), for pages only.

Never called on the per-query path: only when a page or panel renders.
"""

from __future__ import annotations

from functools import lru_cache

import sqlparse
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import SqlLexer

#: Past this size sqlparse gets slow (huge IN lists); show such SQL as it is.
MAX_FORMATTED_LENGTH = 20_000

_lexer = SqlLexer()
_formatter = HtmlFormatter(nowrap=True)


@lru_cache(maxsize=2048)
def format_sql(sql: str) -> str:
    """Reindented SQL with upper-case keywords."""
    if len(sql) > MAX_FORMATTED_LENGTH:
        return sql
    return str(sqlparse.format(sql, reindent=True, keyword_case="upper")).strip()


@lru_cache(maxsize=2048)
def highlight_sql(sql: str, *, reformat: bool = True) -> SafeString:
    """Formatted SQL as HTML ``<span>``s (Pygments escapes the text)."""
    text = format_sql(sql) if reformat else sql
    if len(text) > MAX_FORMATTED_LENGTH:
        return mark_safe(escape(text))
    return mark_safe(str(highlight(text, _lexer, _formatter)))
