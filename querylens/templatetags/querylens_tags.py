"""Template filters for the querylens pages."""

from __future__ import annotations

import json
from typing import Any

from django import template
from django.utils.safestring import SafeString

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
