"""SQL formatting (sqlparse) and highlighting (Pygments), for pages only.

Never called on the per-query path: only when a page or panel renders.
Pygments is imported on the first highlight, not with this module: Django
loads every template tag library (ours imports this module) when its
template engine starts, and a process that never shows a page should not
keep Pygments' modules, whose objects every full garbage collection visits.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import sqlparse
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

#: Past this size sqlparse gets slow (huge IN lists); show such SQL as it is.
MAX_FORMATTED_LENGTH = 20_000


@lru_cache(maxsize=1)
def _highlighter() -> Any:
    """Pygments' ``highlight`` with our lexer and formatter (imported on first use)."""
    from functools import partial

    from pygments import highlight
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import SqlLexer

    return partial(highlight, lexer=SqlLexer(), formatter=HtmlFormatter(nowrap=True))


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
    return mark_safe(str(_highlighter()(text)))
