"""When framework code ran the queries, name the project's declaration behind them.

On a Django admin page the loop is the admin's, in Django's templates: no
frame of the project's code is on the stack. What the project wrote is the
ModelAdmin (its ``list_display``, ``list_select_related``, ``inlines``), and
that is where the fix goes. This module names it as the call site of groups
that have none, and says the fix the admin's way: ``list_select_related``
instead of ``select_related()``, ``get_queryset()`` for a prefetch.

Runs after the response, once per recorded admin page; costs nothing
elsewhere.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from querylens.records import CallSite, NPlusOneGroup

_SELECT_RELATED = re.compile(r'^select_related\("(?P<lookup>[\w]+)"\)$')
_PREFETCH = re.compile(r"^prefetch_related\((?P<arguments>.+)\)$")
_VIEWS = ("changelist", "change", "add", "delete", "history")


@dataclass(frozen=True)
class AdminPage:
    """The ModelAdmin behind an admin page, and which of its pages it is."""

    model_admin: Any
    page: str


def admin_page(request: Any) -> AdminPage | None:
    """The admin page ``request`` was, if it was one (cheap: attribute reads)."""
    match = getattr(request, "resolver_match", None)
    model_admin = getattr(getattr(match, "func", None), "model_admin", None)
    if model_admin is None:
        return None
    name = getattr(match, "url_name", None) or ""
    page = name.rsplit("_", 1)[-1]
    return AdminPage(model_admin, page if page in _VIEWS else "")


def adapt(groups: Sequence[NPlusOneGroup], page: AdminPage) -> None:
    """Name the ModelAdmin where no project frame is known; fix the admin's way."""
    admin_class = type(page.model_admin)
    for group in groups:
        if group.callsite is None:
            group.callsite = _declaration(admin_class, _attribute_for(page, group))
        if page.page == "changelist" and group.suggestion:
            rewritten = _changelist_fix(page.model_admin, group.suggestion)
            if rewritten is not None:
                group.suggestion = rewritten
                where = f"{admin_class.__module__}.{admin_class.__qualname__}"
                note = f"Paste it on {where}, the changelist's ModelAdmin."
                group.note = f"{note} {group.note}" if group.note else note


def _attribute_for(page: AdminPage, group: NPlusOneGroup) -> str:
    if page.page == "changelist":
        return "list_display"
    if page.page in ("change", "add") and getattr(page.model_admin, "inlines", None):
        return "inlines"
    return ""


def _changelist_fix(model_admin: Any, suggestion: str) -> str | None:
    """``list_select_related`` / ``get_queryset()`` for a fix on the listed model."""
    model = model_admin.model
    selected = _SELECT_RELATED.match(suggestion)
    if selected is not None:
        lookup = selected["lookup"]
        if not _starts_on(model, lookup):
            return None
        existing = model_admin.list_select_related
        if isinstance(existing, (list, tuple)):
            kept = [name for name in existing if not lookup.startswith(f"{name}__")]
        else:
            # False: the changelist joined the foreign keys of list_display
            # itself; a tuple replaces that, so it must name them too.
            kept = _foreign_keys_in_list_display(model_admin)
        names = [*[name for name in kept if name != lookup], lookup]
        quoted = ", ".join(f'"{name}"' for name in names)
        return f"list_select_related = ({quoted}{',' if len(names) == 1 else ''})"
    prefetched = _PREFETCH.match(suggestion)
    if prefetched is not None:
        arguments = prefetched["arguments"]
        first = re.match(r'^(?:Prefetch\()?"(?P<lookup>\w+)"', arguments)
        if first is None or not _starts_on(model, first["lookup"]):
            return None
        return (
            "def get_queryset(self, request): return "
            f"super().get_queryset(request).prefetch_related({arguments})"
        )
    return None


def _starts_on(model: Any, lookup: str) -> bool:
    """Whether ``lookup``'s first step is a relation of ``model``."""
    first = lookup.split("__", 1)[0]
    for field in model._meta.get_fields():
        if not field.is_relation:
            continue
        name = field.name
        if field.auto_created and not field.concrete:
            name = field.get_accessor_name()
        if name == first:
            return True
    return False


def _foreign_keys_in_list_display(model_admin: Any) -> list[str]:
    names = []
    for entry in model_admin.list_display:
        if not isinstance(entry, str):
            continue
        try:
            field = model_admin.model._meta.get_field(entry)
        except Exception:
            continue
        if field.many_to_one or field.one_to_one:
            names.append(entry)
    return names


SERIALIZER_NOTE = (
    "A Django REST framework serializer field loads this per object. Paste the fix on "
    "the queryset the view serializes: the view's queryset attribute or get_queryset()."
)


def serializer_site(serializer_class: type, field_name: str) -> CallSite:
    """``api/serializers.py:12 BookSerializer.author``: where the field is declared.

    A field declared on a parent serializer is found there; one listed only
    in ``Meta.fields`` (a ModelSerializer's implicit field) points at that list.
    """
    for owner in serializer_class.__mro__:
        if owner.__module__.startswith("rest_framework."):
            break
        if _declares(owner, field_name):
            return _declaration(owner, field_name)
    return _declaration(serializer_class, field_name, search="fields")


_declarations: dict[tuple[type, str, str], CallSite] = {}


def _declares(owner: type, attribute: str) -> bool:
    try:
        source = inspect.getsource(owner)
    except (OSError, TypeError):
        return False
    return re.search(rf"^\s+{attribute}\s*[:=]", source, re.MULTILINE) is not None


def _declaration(owner: type, attribute: str, search: str | None = None) -> CallSite:
    """``tests/admin.py:17 BookAdmin.list_display``: the line that declares it.

    ``search``: the name whose assignment gives the line, if not ``attribute``.
    """
    search = attribute if search is None else search
    key = (owner, attribute, search)
    site = _declarations.get(key)
    if site is None:
        from querylens.analysis import relative_path

        function = f"{owner.__qualname__}.{attribute}" if attribute else owner.__qualname__
        try:
            lines, first = inspect.getsourcelines(owner)
            filename = relative_path(inspect.getsourcefile(owner) or "")
        except (OSError, TypeError):
            site = CallSite(file=owner.__module__, line=0, function=function)
        else:
            line = first
            pattern = re.compile(rf"^\s+{search}\s*[:=]") if search else None
            for offset, text in enumerate(lines):
                if pattern is not None and pattern.match(text):
                    line = first + offset
                    break
            site = CallSite(file=filename, line=line, function=function)
        if len(_declarations) < 1000:
            _declarations[key] = site
    return site
