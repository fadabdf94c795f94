"""Which ``Model.attribute`` caused a lazy load.

Installed once from ``AppConfig.ready()``. Three kinds of hooks:

* Descriptors that load one object (forward foreign key and one-to-one,
  reverse one-to-one, generic foreign key) are wrapped: queries run while the
  descriptor fetches are tagged with the relation.
* Related managers (reverse foreign key, many-to-many, generic relation) hand
  out a queryset that runs later, so the queryset's ``Query`` carries the tag
  (it survives ``.filter()`` and friends, which copy the query's ``__dict__``)
  and ``SQLCompiler.execute_sql`` tags what it runs.
* ``prefetch_related_objects`` is wrapped: what it runs is a batch load,
  never an N+1 (a chunked ``iterator()`` prefetch repeats it by design).

Outside a recorded request each hook costs one ContextVar lookup.

A tag also records the *path* from the root queryset to the relation
(``books`` then ``publisher``), so a nested loop gets the nested fix
(``prefetch_related("books__publisher")``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from querylens.capture import Recorder, Segment, current_recorder, report_internal_error

SINGLE = "single"
MULTI = "multi"
GENERIC = "generic"

_QUERY_TAG = "_querylens_relation"
_installed = False


def install() -> None:
    """Install the hooks (idempotent)."""
    global _installed
    if _installed:
        return
    _installed = True

    from django.db.models.fields import related_descriptors as rd
    from django.db.models.sql.compiler import SQLCompiler

    rd.ForwardManyToOneDescriptor.__get__ = _single_loader(  # type: ignore[method-assign]
        rd.ForwardManyToOneDescriptor.__get__, lambda d: (d.field.name, SINGLE)
    )
    rd.ReverseOneToOneDescriptor.__get__ = _single_loader(  # type: ignore[method-assign]
        rd.ReverseOneToOneDescriptor.__get__, lambda d: (d.related.accessor_name, SINGLE)
    )
    rd.create_reverse_many_to_one_manager = _manager_factory(
        rd.create_reverse_many_to_one_manager,
        lambda superclass, rel: rel.accessor_name,
    )
    rd.create_forward_many_to_many_manager = _manager_factory(
        rd.create_forward_many_to_many_manager,
        lambda superclass, rel, reverse: rel.accessor_name if reverse else rel.field.name,
    )
    SQLCompiler.execute_sql = _tagged_execute_sql(SQLCompiler.execute_sql)  # type: ignore[method-assign]
    from django.db.models import query as query_module

    # Looked up in the module at each call by QuerySet._prefetch_related_objects.
    query_module.prefetch_related_objects = _batch_loader(query_module.prefetch_related_objects)

    from django.apps import apps

    if apps.is_installed("django.contrib.contenttypes"):
        from django.contrib.contenttypes import fields as ct

        descriptor = getattr(ct, "GenericForeignKeyDescriptor", None)
        if descriptor is not None:  # Django 6.0+: a descriptor class of its own
            descriptor.__get__ = _single_loader(
                descriptor.__get__, lambda d: (d.field.name, GENERIC)
            )
        else:  # Django 5.2: the field is its own descriptor
            ct.GenericForeignKey.__get__ = _single_loader(  # type: ignore[method-assign]
                ct.GenericForeignKey.__get__, lambda d: (d.name, GENERIC)
            )
        ct.create_generic_related_manager = _manager_factory(
            ct.create_generic_related_manager,
            lambda superclass, rel: rel.field.name,
        )


def label_of(instance: Any, attribute: str) -> str:
    return f"{type(instance)._meta.label}.{attribute}"


def _single_loader(
    original: Callable[..., Any], describe: Callable[[Any], tuple[str, str]]
) -> Callable[..., Any]:
    """Wrap a descriptor ``__get__`` that may fetch one related object."""

    @functools.wraps(original)
    def __get__(self: Any, instance: Any, cls: Any = None) -> Any:
        recorder = current_recorder()
        if recorder is None or instance is None:
            return original(self, instance, cls)
        mark = recorder.mark()
        value = None
        try:
            value = original(self, instance, cls)
            return value
        finally:
            # Cached accesses, by far the most common, cost nothing more.
            if recorder.count != mark[0]:
                try:
                    attribute, kind = describe(self)
                    # The object just loaded sits in the instance's cache now:
                    # it says nothing about how the instance was reached.
                    path, weak_via = origin(recorder, instance, skip=attribute)
                    path = (*path, (attribute, kind))
                    recorder.tag_since(mark, label_of(instance, attribute), path, weak_via)
                    if value is not None:
                        recorder.parents[id(value)] = (value, instance, attribute, kind)
                except Exception:  # never let attribution break the user's code
                    report_internal_error("naming the relation of a lazy load")

    return __get__


def _manager_factory(
    original: Callable[..., type], describe: Callable[..., str]
) -> Callable[..., type]:
    """Wrap a related-manager class factory so its querysets carry a tag."""

    @functools.wraps(original)
    def factory(*args: Any, **kwargs: Any) -> type:
        manager_class = original(*args, **kwargs)
        try:
            attribute = describe(*args, **kwargs)
        except Exception:  # an unknown relation: leave its manager as Django made it
            report_internal_error("preparing a related manager")
            return manager_class
        kind = GENERIC if original.__name__ == "create_generic_related_manager" else MULTI
        get_queryset = manager_class.get_queryset  # type: ignore[attr-defined]

        def tagged_get_queryset(self: Any) -> Any:
            queryset = get_queryset(self)
            recorder = current_recorder()
            # A prefetched queryset runs no query: nothing to attribute.
            if recorder is not None and queryset._result_cache is None:
                try:
                    path, weak_via = origin(recorder, self.instance)
                    queryset.query.__dict__[_QUERY_TAG] = (
                        label_of(self.instance, attribute),
                        (*path, (attribute, kind)),
                        weak_via,
                    )
                except Exception:
                    report_internal_error("tagging a related manager's queryset")
            return queryset

        manager_class.get_queryset = tagged_get_queryset  # type: ignore[attr-defined]
        return manager_class

    return factory


def _tagged_execute_sql(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def execute_sql(self: Any, *args: Any, **kwargs: Any) -> Any:
        tag = self.query.__dict__.get(_QUERY_TAG)
        recorder = current_recorder() if tag is not None else None
        if recorder is None:
            return original(self, *args, **kwargs)
        mark = recorder.mark()
        try:
            return original(self, *args, **kwargs)
        finally:
            try:
                recorder.tag_since(mark, *tag)
            except Exception:
                report_internal_error("naming the relation of a related manager's query")

    return execute_sql


def _batch_loader(original: Callable[..., Any]) -> Callable[..., Any]:
    """Mark what ``prefetch_related_objects`` runs as batch loads.

    A chunked ``prefetch_related(...).iterator(chunk_size=...)`` runs one
    ``IN (...)`` query per chunk by design: repeated, from one line, and
    still not an N+1.
    """

    @functools.wraps(original)
    def prefetch_related_objects(*args: Any, **kwargs: Any) -> Any:
        recorder = current_recorder()
        if recorder is None:
            return original(*args, **kwargs)
        mark = recorder.mark()
        try:
            return original(*args, **kwargs)
        finally:
            try:
                recorder.tag_batch_since(mark)
            except Exception:
                report_internal_error("marking a prefetch's queries")

    return prefetch_related_objects


def origin(
    recorder: Recorder, instance: Any, skip: str | None = None
) -> tuple[tuple[Segment, ...], str | None]:
    """The path from a root queryset to ``instance``.

    Returns ``(path, weak_via)``. ``weak_via`` names a relation whose N+1
    must be present in the same request for the path to be trusted: a book
    whose ``author`` is cached may come from ``author.books.all()`` (then
    ``shop.Author.books`` is an N+1 too) or from ``select_related("author")``.
    """
    path: list[Segment] = []
    weak_via: str | None = None
    seen: set[int] = set()
    current = instance
    while current is not None and id(current) not in seen and len(path) < 5:
        seen.add(id(current))
        loaded = recorder.parents.get(id(current))
        if loaded is not None and loaded[0] is current:
            _, parent, attribute, kind = loaded
            path.append((attribute, kind))
            current = parent
            continue
        step = _reached_through(current, seen, skip if current is instance else None)
        if step is None:
            break
        parent, attribute, certain = step
        path.append((attribute, MULTI))
        if not certain and weak_via is None:
            weak_via = label_of(parent, attribute)
        current = parent
    path.reverse()
    return tuple(path), weak_via


def _reached_through(
    instance: Any, seen: set[int], skip: str | None = None
) -> tuple[Any, str, bool] | None:
    """The parent whose reverse relation likely produced ``instance``.

    Django caches the parent on children loaded through a reverse foreign key
    (``author.books.all()`` sets ``book.author``), for both lazy loads and
    ``prefetch_related``. A prefetch is certain: the parent's prefetch cache
    holds the accessor.
    """
    state = getattr(instance, "_state", None)
    cache = getattr(state, "fields_cache", None)
    if not cache:
        return None
    guess = None
    for name, parent in cache.items():
        if name == skip:
            continue
        # Skip what the walk has passed already: book.author cached on a book
        # loaded by author.books must not send us back to the book.
        if parent is None or id(parent) in seen or not hasattr(parent, "_meta"):
            continue
        try:
            field = instance._meta.get_field(name)
        except Exception:
            continue
        remote = getattr(field, "remote_field", None)  # None for a generic foreign key
        if not getattr(field, "many_to_one", False) or remote is None:
            continue
        accessor = remote.accessor_name
        if not accessor or remote.hidden:
            continue
        if accessor in getattr(parent, "_prefetched_objects_cache", {}):
            return parent, accessor, True
        if guess is None:
            guess = (parent, accessor, False)
    return guess
