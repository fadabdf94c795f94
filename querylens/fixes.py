"""The fix to paste for an N+1 group, built from what actually happened.

Every fix here is checked by a test that applies it and counts the queries
before and after (``tests/test_fixes.py``). Where no one-line fix is known,
the answer is a note saying what helps, never a guess.

Inputs: the first query's SQL (its shape: ``COUNT(*)``, ``SUM(...)``, ``LIMIT
21``), the relation path from the root queryset (``books`` then
``publisher``), and how the per-object queryset differed from the relation
itself (``refinement``, filled by ``querylens.relations``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from querylens.capture import Segment
from querylens.fingerprint import statement_kind

#: Django's ``QuerySet.get()`` fetches at most this many rows.
_GET_LIMIT = re.compile(r"\bLIMIT\s+21\s*$", re.IGNORECASE)
_COUNT = re.compile(r"^\s*SELECT\s+COUNT\(\*\)", re.IGNORECASE)
#: ``SELECT SUM("t"."total") AS "total__sum", ... FROM``: what ``aggregate()`` runs.
_AGGREGATE = re.compile(
    r"""(?P<function>AVG|SUM|MIN|MAX|COUNT)\(\s*(?P<distinct>DISTINCT\s+)?
        (?:[`"]?\w+[`"]?\.)?[`"]?(?P<column>\w+)[`"]?\s*\)
        (?:::\w+(?:\s+precision)?)?\s+AS\s+[`"]?(?P<alias>\w+)[`"]?""",
    re.IGNORECASE | re.VERBOSE,
)
_SELECT_LIST = re.compile(r"^\s*SELECT\s+(?P<select>.*?)\s+FROM\s", re.IGNORECASE | re.DOTALL)

WALK_NOTE = (
    "A walk up a tree, one level per query: select_related() cannot follow it to any "
    "depth. No one-line fix; a recursive CTE (WITH RECURSIVE), a materialised path or "
    "nested sets (django-treebeard, django-mptt) load the whole branch at once."
)
SAME_QUERY_NOTE = (
    "The same query with the same parameters, run again on every pass of a loop: "
    "evaluate it once before the loop (list(queryset), or a variable) and reuse the "
    "result. Loading by ids (filter(pk__in=...)) would not help: there are no ids to batch."
)
FORM_CHOICES_NOTE = (
    "Every form of a formset (an admin inline, say) runs its choice field's query again. "
    "Evaluate the choices once per request: in the ModelAdmin or InlineModelAdmin, "
    "override formfield_for_foreignkey(self, db_field, request, **kwargs), call super(), "
    "then set formfield.choices = list(formfield.choices) and return it; every form "
    "copies the list instead of querying."
)


@dataclass(frozen=True)
class Fix:
    """What to paste (``suggestion``) and what to know (``note``)."""

    suggestion: str | None
    note: str | None = None


def fix_for(
    sql: str,
    path: tuple[Segment, ...],
    *,
    relation: str | None = None,
    refinement: Refinement | DeferredLoad | None = None,
    same_params: bool = False,
    form_choices: bool = False,
    not_own_loop: bool = False,
) -> Fix:
    """The fix for a group whose first query is ``sql``.

    ``same_params``: every query of the group had the same parameters (the
    same query again, not one per object). ``form_choices``: the queries ran
    in a form choice field's iterator (a formset's forms).
    """
    kind = statement_kind(sql)
    if path and path[-1][1] == "deferred":
        return _load_with_the_rows(path, refinement)
    if path:
        attribute = path[-1][0]
        lookup = "__".join(step for step, _ in path)
        if _COUNT.match(sql):
            return Fix(f'annotate(n=Count("{lookup}"))')
        aggregates = _aggregates(sql)
        if aggregates is not None:
            annotations = _annotations(aggregates, lookup, relation)
            if annotations is None:
                return Fix(None, AGGREGATE_NOTE)
            return Fix(f"annotate({annotations})", AGGREGATE_NOTE)
        if isinstance(refinement, Refinement) and refinement.by_package:
            return _refined_in_package(lookup, attribute, refinement.by_package)
        if isinstance(refinement, Refinement):
            return _prefetch_object(lookup, attribute, relation, refinement)
        if all(step_kind == "single" for _, step_kind in path):
            return Fix(f'select_related("{lookup}")', fetch_peers_note(path))
        return Fix(f'prefetch_related("{lookup}")', fetch_peers_note(path))
    if form_choices:
        return Fix(None, FORM_CHOICES_NOTE)
    if not_own_loop and kind in ("insert", "update", "delete"):
        return Fix(None, TEMPLATE_WRITE_NOTE)
    if same_params and kind in ("select", "with"):
        return Fix(None, SAME_QUERY_NOTE)
    if kind in ("select", "with"):
        if _COUNT.match(sql):
            return Fix("annotate(n=Count(...))")
        if _GET_LIMIT.search(sql):
            return Fix("in_bulk(ids)")
        return Fix("filter(pk__in=ids)")
    if kind == "insert":
        return Fix("bulk_create(objs)", BULK_NOTE)
    if kind == "update":
        return Fix("bulk_update(objs, fields)", BULK_NOTE)
    if kind == "delete":
        return Fix("filter(pk__in=ids).delete()", DELETE_NOTE)
    return Fix(None)


BULK_NOTE = (
    "bulk_create() and bulk_update() do not call save() and send no pre_save/post_save "
    "signals: move what those did into the loop that builds the objects."
)
DELETE_NOTE = (
    "QuerySet.delete() sends pre_delete/post_delete signals and runs cascades, but does not "
    "call the models' own delete() methods."
)
AGGREGATE_NOTE = (
    "annotate() on the queryset that loads the parents gives every parent its own value "
    "in the same query; read it as an attribute (parent.<name>) instead of calling "
    "aggregate() per parent. Two annotations across different multi-valued relations "
    "multiply each other's rows: use a Subquery for the second."
)


# -- aggregates -------------------------------------------------------------------


def _aggregates(sql: str) -> list[tuple[str, bool, str, str]] | None:
    """``(function, distinct, column, alias)`` per aggregate of an ``aggregate()`` query."""
    select = _SELECT_LIST.match(sql)
    if select is None:
        return None
    found = [
        (m["function"].upper(), bool(m["distinct"]), m["column"], m["alias"])
        for m in _AGGREGATE.finditer(select["select"])
    ]
    return found or None


_FUNCTIONS = {"AVG": "Avg", "SUM": "Sum", "MIN": "Min", "MAX": "Max", "COUNT": "Count"}


def _annotations(
    aggregates: Sequence[tuple[str, bool, str, str]], lookup: str, relation: str | None
) -> str | None:
    model = related_model(relation)
    if model is None:
        return None
    parts = []
    for function, distinct, column, alias in aggregates:
        field = next(
            (f.name for f in model._meta.concrete_fields if f.column == column),
            None,
        )
        if field is None:
            return None
        extra = ", distinct=True" if distinct else ""
        parts.append(f'{alias}={_FUNCTIONS[function]}("{lookup}__{field}"{extra})')
    return ", ".join(parts)


def related_model(relation: str | None) -> Any:
    """The model at the far end of ``app_label.Model.attribute``, or None."""
    if relation is None:
        return None
    try:
        from django.apps import apps

        app_label, model_name, attribute = relation.split(".")
        model = apps.get_model(app_label, model_name)
    except (LookupError, ValueError):
        return None
    for field in model._meta.get_fields():
        name = getattr(field, "name", None)
        if field.auto_created and not field.concrete:
            # A reverse relation: reached by its accessor (``books``, ``book_set``).
            name = field.get_accessor_name()
        if name == attribute:
            return field.related_model
    return None


# -- a prefetch the loop refines per object ---------------------------------------


@dataclass(frozen=True)
class Refinement:
    """How the per-object queryset differed from the relation it started from."""

    filters: tuple[str, ...] = ()
    excluded: bool = False
    order_by: tuple[str, ...] | None = None
    select_related: tuple[str, ...] = ()
    sliced: tuple[int, int | None] | None = None
    values: bool = False
    #: The installed package whose code refined it (not the project's).
    by_package: str | None = None

    def chain(self) -> str:
        """The queryset methods, as code (``.filter(title__startswith=...)``)."""
        parts = []
        if self.filters:
            arguments = ", ".join(f"{name}=..." if name != "..." else name for name in self.filters)
            parts.append(f".{'exclude' if self.excluded else 'filter'}({arguments})")
        if self.select_related:
            parts.append(f".select_related({_quoted(self.select_related)})")
        if self.order_by is not None:
            parts.append(f".order_by({_quoted(self.order_by)})")
        if self.sliced is not None:
            low, high = self.sliced
            parts.append(f"[{low or ''}:{'' if high is None else high}]")
        return "".join(parts)


def _quoted(names: Sequence[str]) -> str:
    return ", ".join(f'"{name}"' if name != "..." else name for name in names)


def _prefetch_object(
    lookup: str, attribute: str, relation: str | None, refinement: Refinement
) -> Fix:
    model = related_model(relation)
    chain = refinement.chain()
    if model is None:
        return Fix(None, REFINED_NOTE.format(attribute=attribute, to_attr="..."))
    if refinement.sliced is not None and refinement.sliced[1] == 1:
        to_attr = f"first_{attribute}"
    elif refinement.filters:
        to_attr = f"filtered_{attribute}"
    elif refinement.order_by is not None:
        to_attr = f"ordered_{attribute}"
    else:
        to_attr = f"{attribute}_list"
    queryset = f"{model.__name__}.objects{chain or '.all()'}"
    note = REFINED_NOTE.format(attribute=attribute, to_attr=to_attr)
    if refinement.values:
        note += " values()/values_list() cannot be prefetched: read the fields from the objects."
    return Fix(
        f'prefetch_related(Prefetch("{lookup}", queryset={queryset}, to_attr="{to_attr}"))',
        note,
    )


def _refined_in_package(lookup: str, attribute: str, package: str) -> Fix:
    if package == "wagtail" and attribute == "renditions":
        # Wagtail looks for renditions among the prefetched ones first.
        return Fix(f'prefetch_related("{lookup}")', WAGTAIL_RENDITIONS_NOTE)
    return Fix(None, PACKAGE_REFINED_NOTE.format(package=package, lookup=lookup))


WAGTAIL_RENDITIONS_NOTE = (
    "Wagtail's image tags look up each rendition with a filter; they read prefetched "
    "renditions first, so prefetching them with the objects serves every lookup "
    "(for Image querysets, Wagtail's prefetch_renditions() does the same)."
)
PACKAGE_REFINED_NOTE = (
    "The per-object query is refined inside {package}'s own code, which a "
    'Prefetch(to_attr=...) cannot reach. No fix from the project is known: prefetch_related("{lookup}") '
    "helps only if {package} reads prefetched objects; check its documentation."
)
TEMPLATE_WRITE_NOTE = (
    "Rows written one by one by code the project does not loop over itself: a template "
    "tag or an installed package (filling a cache table, say). No bulk_create() can be "
    "pasted there; if it repeats on every request, the rows are not being reused."
)

REFINED_NOTE = (
    "The loop refines {attribute} per object (filter, order, slice or select_related), "
    "so a plain prefetch_related cannot serve it: each object queries again. Prefetch the "
    "refined queryset once and read the list it fills, obj.{to_attr} (obj.{to_attr}[0] "
    "for the first), instead of the per-object query. Fill in the filter's values; a "
    "value that differs per parent cannot go in one Prefetch: annotate a "
    "Subquery(OuterRef(...)) instead."
)


# -- deferred fields ----------------------------------------------------------------


@dataclass(frozen=True)
class DeferredLoad:
    """The fields an instance had when one of its deferred fields was read."""

    loaded: tuple[str, ...]
    still_deferred: tuple[str, ...]


DEFERRED_NOTE = (
    "only() or defer() left {field} out of the query, and reading it loads it one row "
    "at a time. Load it with the rows instead."
)


def _load_with_the_rows(path: tuple[Segment, ...], load: object) -> Fix:
    field = path[-1][0]
    lookup = "__".join(step for step, _ in path)
    note = DEFERRED_NOTE.format(field=lookup)
    peers = fetch_peers_note(path)
    if peers:
        note = f"{note} {peers}"
    if len(path) > 1 or not isinstance(load, DeferredLoad):
        # Deferred on an object reached through a join: the lookup goes in
        # the root queryset's only()/defer(), whichever it used.
        return Fix(None, f'{note} Add "{lookup}" to only(), or remove it from defer().')
    # The instance cannot tell whether only() or defer() left the field out,
    # and appended to a defer(), only() subtracts instead of replacing: start
    # from defer(None), which clears either, then say the fields shortest.
    note += (
        " defer(None) clears the earlier only()/defer() so the fix works appended;"
        " editing that call to the same fields is equivalent."
    )
    rest = tuple(name for name in load.still_deferred if name != field)
    if len(load.loaded) + 1 <= len(rest):
        return Fix(f"defer(None).only({_quoted((*load.loaded, field))})", note)
    return Fix("defer(None)" + (f".defer({_quoted(rest)})" if rest else ""), note)


def fetch_peers_note(path: tuple[Segment, ...]) -> str | None:
    """Django 6.1's fetch modes batch a lazy load for all objects of the queryset.

    For forward and one-to-one relations, generic foreign keys and deferred
    fields only; a related manager (reverse or many-to-many) is not batched.
    """
    import django

    if django.VERSION < (6, 1) or not path:
        return None
    if path[-1][1] not in ("single", "generic", "deferred"):
        return None
    return (
        "On Django 6.1+, .fetch_mode(models.FETCH_PEERS) on the queryset also loads it for "
        "all its objects at the first access (not with .iterator(), which does not batch)."
    )
