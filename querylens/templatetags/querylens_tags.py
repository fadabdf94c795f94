"""Template filters for the querylens pages."""

from __future__ import annotations

import json
from typing import Any

from django import template
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe

from querylens.formatting import highlight_sql

register = template.Library()


@register.filter
def ql_sql(sql: str) -> SafeString:
    """SQL formatted and highlighted, escaped by Pygments; only what a page shows."""
    return highlight_sql(str(sql))


@register.filter
def ql_json(value: Any) -> str:
    """Recorded parameters as compact JSON text (the template escapes it)."""
    return json.dumps(value, ensure_ascii=False, default=str)


@register.filter
def ql_callsite(site: Any) -> SafeString:
    """A call site as HTML: ``file:line in function``, or a template line.

    A filter rather than an included template: the request page shows one
    per query and per stack frame, and every include is a template render
    of its own (which django-debug-toolbar's Templates panel records).
    """
    if not site:
        return mark_safe('<span class="ql-quiet">unknown call site</span>')
    if site.is_template:
        return format_html(
            '<span class="ql-code" title="template">{}:{}</span> '
            '<span class="ql-quiet">(template)</span>',
            site.file,
            site.line,
        )
    return format_html(
        '<span class="ql-code" title="{}()">{}:{}</span> <span class="ql-quiet">in</span> '
        '<span class="ql-code">{}</span>',
        site.function,
        site.file,
        site.line,
        site.function,
    )
