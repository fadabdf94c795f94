"""Which ``Model.attribute`` caused a lazy load.

Installed once from ``AppConfig.ready()``. The hooks:

* Descriptors that load one object (forward foreign key and one-to-one,
  reverse one-to-one, generic foreign key) and deferred fields
  (``DeferredAttribute``, reached only for a field ``only()``/``defer()``
  left out) are wrapped: queries run while they fetch are tagged with the
  relation or field.
* Related managers (reverse foreign key, many-to-many, generic relation) hand
  out a queryset that runs later, so the queryset's ``Query`` carries a tag
  (it survives ``.filter()`` and friends, which copy the query's ``__dict__``)
  and ``SQLCompiler.execute_sql`` names what it runs, telling the relation
  itself from a refinement of it (a filter, a slice: a plain prefetch cannot
  serve those). Prefetched querysets and ``Prefetch(queryset=...)`` results
  are tagged too.
* ``prefetch_related_objects`` is wrapped: what it runs is a batch load,
  never an N+1 (a chunked ``iterator()`` prefetch repeats it by design).
* ``select_related``'s populators, while recording, leave a trail from each
  joined object to its parent row, so a lazy load from a joined object
  names the whole path (``author__profile``).

The hooks are in place only while a recording is active somewhere in the
process (``capture.on_activity``): outside recordings Django's own
descriptors run, at no cost. During one, a thread that is not recording
pays one ContextVar lookup per hook.

A tag also records the *path* from the root queryset to the relation
(``books`` then ``publisher``), so a nested loop gets the nested fix
(``prefetch_related("books__publisher")``), and the root model, whose query
loaded the objects (``source_query``).
"""

from __future__ import annotations

import dataclasses
import functools
import sys
import threading
import weakref
from _thread import get_ident
from collections.abc import Callable
from typing import Any

from querylens import capture
from querylens.capture import (
    Recorder,
    Segment,
    calling_package,
    current_recorder,
    report_internal_error,
)
from querylens.fixes import DeferredLoad, Refinement

#: The active recorder's lookup, bound once: the descriptors call it on every access.
_recorder = capture._current.get

SINGLE = "single"
MULTI = "multi"
GENERIC = "generic"
DEFERRED = "deferred"

_QUERY_TAG = "_querylens_relation"
_installed = False


class _Patch:
    """One attribute of Django's replaced by a hook while a recording is active."""

    __slots__ = ("hook", "inherited", "name", "original", "owner")

    def __init__(self, owner: Any, name: str, hook: Callable[..., Any]) -> None:
        self.owner = owner
        self.name = name
        self.original = getattr(owner, name)
        #: Not in the owner's own ``__dict__`` (a method of a base class):
        #: put back by deleting the hook, not by copying the base's method.
        self.inherited = isinstance(owner, type) and name not in owner.__dict__
        self.hook = hook

    def apply(self, on: bool) -> None:
        if on:
            setattr(self.owner, self.name, self.hook)
        elif self.inherited:
            if self.owner.__dict__.get(self.name) is self.hook:
                delattr(self.owner, self.name)
        else:
            setattr(self.owner, self.name, self.original)


#: Every hook, applied while a recording is active anywhere in the process
#: and removed when none is: outside recordings Django's own code runs, at
#: no cost (``capture.on_activity``).
_patches: list[_Patch] = []
_patches_lock = threading.Lock()
_hooks_on = False


def _switch(on: bool) -> None:
    global _hooks_on
    with _patches_lock:
        _hooks_on = on
        for patch in _patches:
            patch.apply(on)


def _add_patch(owner: Any, name: str, make_hook: Callable[[Any], Callable[..., Any]]) -> None:
    """Register a hook made from the original attribute; applied at once if recording."""
    with _patches_lock:
        patch = _Patch(owner, name, make_hook(getattr(owner, name)))
        _patches.append(patch)
        if _hooks_on:
            patch.apply(True)


def install() -> None:
    """Prepare the hooks (idempotent); they are applied only while recording."""
    global _installed
    if _installed:
        return
    _installed = True

    from django.db.models.fields import related_descriptors as rd
    from django.db.models.sql.compiler import SQLCompiler

    _add_patch(
        rd.ForwardManyToOneDescriptor,
        "__get__",
        lambda original: _forward_loader(
            original,
            _single_loader(original, lambda d: (d.field.name, SINGLE), uncached=True),
        ),
    )
    _add_patch(
        rd.ReverseOneToOneDescriptor,
        "__get__",
        lambda original: _single_loader(original, lambda d: (d.related.accessor_name, SINGLE)),
    )
    # Related manager classes are made once per relation, whenever first
    # used (recording or not) and cached by Django: the factories stay
    # wrapped, and each class they make gets hooks of its own (_add_patch).
    rd.create_reverse_many_to_one_manager = _manager_factory(
        rd.create_reverse_many_to_one_manager,
        lambda superclass, rel: rel.accessor_name,
    )
    rd.create_forward_many_to_many_manager = _manager_factory(
        rd.create_forward_many_to_many_manager,
        lambda superclass, rel, reverse: rel.accessor_name if reverse else rel.field.name,
    )
    _add_patch(SQLCompiler, "execute_sql", _tagged_execute_sql)
    from django.db.models import query as query_module

    # Looked up in the module at each call by QuerySet._prefetch_related_objects.
    _add_patch(query_module, "prefetch_related_objects", _batch_loader)
    _add_patch(query_module.RelatedPopulator, "__init__", _recording_populator)

    from django.db.models.query_utils import DeferredAttribute

    # Loads a field missing from the instance (deferred by only() or
    # defer()); also reads every foreign key column (``author_id``).
    _add_patch(DeferredAttribute, "__get__", _deferred_loader)

    from django.apps import apps

    if apps.is_installed("django.contrib.contenttypes"):
        from django.contrib.contenttypes import fields as ct

        descriptor = getattr(ct, "GenericForeignKeyDescriptor", None)
        if descriptor is not None:  # Django 6.0+: a descriptor class of its own
            _add_patch(
                descriptor,
                "__get__",
                lambda original: _single_loader(original, lambda d: (d.field.name, GENERIC)),
            )
        else:  # Django 5.2: the field is its own descriptor
            _add_patch(
                ct.GenericForeignKey,
                "__get__",
                lambda original: _single_loader(original, lambda d: (d.name, GENERIC)),
            )
        ct.create_generic_related_manager = _manager_factory(
            ct.create_generic_related_manager,
            lambda superclass, rel: rel.field.name,
        )
    capture.on_activity(_switch)


#: ``app_label.Model`` by model class: Django's ``Options.label`` formats
#: its string on every read, and every lazy load of a loop reads it.
_model_labels: dict[type, str] = {}


def model_label(model: type) -> str:
    label = _model_labels.get(model)
    if label is None:
        label = model._meta.label  # type: ignore[attr-defined]
        if len(_model_labels) < 10_000:  # model classes made at run time: bounded
            _model_labels[model] = label
    return label


def label_of(instance: Any, attribute: str) -> str:
    return f"{model_label(type(instance))}.{attribute}"


def _single_loader(
    original: Callable[..., Any],
    describe: Callable[[Any], tuple[str, str]],
    *,
    uncached: bool = False,
) -> Callable[..., Any]:
    """Wrap a descriptor ``__get__`` that may fetch one related object.

    ``uncached``: called only when no object is cached (``_forward_loader``
    answers those reads), so a load is about to run (or a cached None is
    answered, with no query).
    """

    @functools.wraps(original)
    def __get__(self: Any, instance: Any, cls: Any = None) -> Any:
        recorder = _recorder()
        if recorder is None or instance is None:
            return original(self, instance, cls)
        mark = recorder.count
        if uncached:
            # The load's query is run by Django's code alone, below this
            # call: its walk starts at the caller (``Recorder.walk_from``).
            recorder.walk_from = (sys._getframe(1), mark, get_ident())
        try:
            value = original(self, instance, cls)
        except BaseException:
            # A reverse one-to-one with no row raises after its query ran.
            if recorder.count != mark:
                _name_single(recorder, mark, self, instance, None, describe)
            raise
        finally:
            if uncached:
                recorder.walk_from = None
        # Cached accesses, by far the most common, cost one comparison more.
        if recorder.count != mark:
            _name_single(recorder, mark, self, instance, value, describe)
        return value

    return __get__


def _forward_loader(original: Callable[..., Any], loader: Callable[..., Any]) -> Callable[..., Any]:
    """``loader`` behind the forward relation's cache, read as Django reads it.

    Most accesses of ``book.author`` find the author cached on the book
    (``select_related``, an earlier access): Django's ``__get__`` then
    returns that object, and so does this, without a call to it. Anything
    else (no cached object, a cached None) goes to ``loader``, which runs
    Django's own code.
    """

    @functools.wraps(original)
    def __get__(self: Any, instance: Any, cls: Any = None) -> Any:
        if instance is not None:
            value = instance._state.fields_cache.get(self.field.cache_name)
            if value is not None:
                return value
        return loader(self, instance, cls)

    return __get__


def _name_single(
    recorder: Recorder,
    mark: int,
    descriptor: Any,
    instance: Any,
    value: Any,
    describe: Callable[[Any], tuple[str, str]],
) -> None:
    try:
        attribute, kind = describe(descriptor)
        # The object just loaded sits in the instance's cache now: it says
        # nothing about how the instance was reached.
        path, weak_via, root = origin(recorder, instance, skip=attribute)
        path = (*path, (attribute, kind))
        recorder.tag_since(mark, label_of(instance, attribute), path, weak_via, root=root)
        if value is not None:
            recorder.parents[id(value)] = (value, instance, attribute, kind)
    except Exception:  # never let attribution break the user's code
        report_internal_error("naming the relation of a lazy load")


def _deferred_loader(original: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap ``DeferredAttribute.__get__``: a deferred field loaded on access."""

    @functools.wraps(original)
    def __get__(self: Any, instance: Any, cls: Any = None) -> Any:
        if instance is not None:
            # A loaded field, as Django's own __get__ reads it. Foreign key
            # columns (``author_id``) come here on every read: their
            # descriptor has a __set__, so the instance's dict is not read first.
            data = instance.__dict__
            name = self.field.attname
            if name in data:
                return data[name]
        recorder = _recorder()
        if recorder is None or instance is None:
            return original(self, instance, cls)
        mark = recorder.mark()
        try:
            return original(self, instance, cls)
        finally:
            if recorder.count != mark:
                try:
                    _name_deferred_load(recorder, mark, self.field, instance)
                except Exception:
                    report_internal_error("naming a deferred field's load")

    return __get__


def _name_deferred_load(recorder: Recorder, mark: int, field: Any, instance: Any) -> None:
    fields = instance._meta.concrete_fields
    present = instance.__dict__
    loaded = tuple(f.name for f in fields if f.attname in present and f.name != field.name)
    deferred = tuple(f.name for f in fields if f.attname not in present)
    path, weak_via, root = origin(recorder, instance)
    recorder.tag_since(
        mark,
        label_of(instance, field.name),
        (*path, (field.name, DEFERRED)),
        weak_via,
        DeferredLoad(loaded=loaded, still_deferred=deferred),
        root=root,
    )


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
        # A private method of Django's; without it, Prefetch(queryset=...) loses the tag.
        apply_rel_filters = getattr(manager_class, "_apply_rel_filters", None)

        def tagged_get_queryset(self: Any) -> Any:
            queryset = get_queryset(self)
            if current_recorder() is not None and (
                # A prefetched queryset is the same object at every access:
                # tagged once (by the prefetch itself, usually) is enough.
                queryset._result_cache is None or queryset.query.__dict__.get(_QUERY_TAG) is None
            ):
                # Prefetched or not: a prefetched queryset refined per object
                # (.filter(), .first()) queries again, and that is what the
                # tag then names.
                _tag(queryset, self.instance, attribute, kind)
            return queryset

        def tagged_apply_rel_filters(self: Any, queryset: Any) -> Any:
            # What prefetch_related(Prefetch(..., queryset=...)) caches: its
            # refinements per object keep their relation.
            queryset = apply_rel_filters(self, queryset)  # type: ignore[misc]
            if current_recorder() is not None:
                _tag(queryset, self.instance, attribute, kind)
            return queryset

        _add_patch(manager_class, "get_queryset", lambda original: tagged_get_queryset)
        if apply_rel_filters is not None:
            _add_patch(
                manager_class, "_apply_rel_filters", lambda original: tagged_apply_rel_filters
            )
        return manager_class

    return factory


def _tag(queryset: Any, instance: Any, attribute: str, kind: str) -> None:
    """Tag a related manager's queryset; the path is worked out if it ever runs.

    The tag keeps the query's shape, to tell later whether what ran was the
    relation itself or a refinement of it; and the instance weakly, so a
    prefetch cache holding the queryset makes no reference cycle.
    """
    try:
        query = queryset.query
        query.__dict__[_QUERY_TAG] = _Tag(weakref.ref(instance), attribute, kind, _shape(query))
    except Exception:
        report_internal_error("tagging a related manager's queryset")


class _Tag(tuple):  # type: ignore[type-arg]
    """A related manager's tag, kept in its query's ``__dict__``.

    Querysets get pickled (Django's cache framework, a CMS caching objects
    with their prefetched relations): the tag holds a weak reference, which
    cannot be, so it pickles to None (an unpickled query has no recording to
    name anyway) and copies as itself.
    """

    __slots__ = ()

    def __new__(cls, *parts: Any) -> _Tag:
        return super().__new__(cls, parts)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_no_tag, ())

    def __copy__(self) -> _Tag:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> _Tag:
        return self


def _no_tag() -> None:
    return None


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
            if recorder.count != mark:
                try:
                    _name_manager_query(recorder, mark, self.query, tag)
                except Exception:
                    report_internal_error("naming the relation of a related manager's query")

    return execute_sql


def _name_manager_query(
    recorder: Recorder,
    mark: int,
    query: Any,
    tag: tuple[Any, str, str, tuple[Any, ...]],
) -> None:
    reference, attribute, kind, shape = tag
    instance = reference()
    if instance is None:
        return
    path, weak_via, root = origin(recorder, instance)
    refinement = refinement_of(query, shape)
    if refinement is not None:
        # Refined by a package's own code, a Prefetch(to_attr=...) would
        # never be read: the fix differs (querylens.fixes).
        package = calling_package(sys._getframe(2))
        if package is not None:
            refinement = dataclasses.replace(refinement, by_package=package)
    recorder.tag_since(
        mark,
        label_of(instance, attribute),
        (*path, (attribute, kind)),
        weak_via,
        refinement,
        root=root,
    )


def _shape(query: Any) -> tuple[Any, ...]:
    """What a refinement of a related manager's queryset changes."""
    return (
        len(query.where.children),
        query.order_by,
        query.low_mark,
        query.high_mark,
        query.select_related,
        query.values_select,
    )


def refinement_of(query: Any, shape: tuple[Any, ...]) -> Refinement | None:
    """How ``query`` differs from the relation's queryset, or None if it does not.

    ``count()``, ``exists()`` and ``aggregate()`` change the query in their
    own way; those are told apart by their SQL (``querylens.fixes``), and an
    ``exists()`` alone is no refinement: a prefetch serves it.
    """
    children, order_by, low, high, select_related, values_select = shape
    exists = "a" in query.annotations and not query.default_cols and query.high_mark == 1
    new_children = query.where.children[children:]
    filters: list[str] = []
    excluded = False
    for child in new_children:
        negated = getattr(child, "negated", False)
        if negated and len(getattr(child, "children", ())) == 1:
            excluded = True
            child = child.children[0]
        filters.append(_lookup_name(child, query))
    refined_order = None
    if query.order_by != order_by and not exists:
        refined_order = tuple(name if isinstance(name, str) else "..." for name in query.order_by)
    sliced = None
    if (query.low_mark, query.high_mark) != (low, high) and not exists:
        sliced = (query.low_mark, query.high_mark)
    related: tuple[str, ...] = ()
    if query.select_related != select_related:
        related = tuple(_related_names(query.select_related)) or ("...",)
    values = query.values_select != values_select
    if not (filters or refined_order is not None or sliced or related or values):
        return None
    return Refinement(
        filters=tuple(filters),
        excluded=excluded and len(filters) == 1,
        order_by=refined_order,
        select_related=related,
        sliced=sliced,
        values=values,
    )


def _lookup_name(child: Any, query: Any) -> str:
    """``title__startswith`` for a lookup on the model's own column, else ``...``."""
    from django.db.models.expressions import Col
    from django.db.models.lookups import Lookup

    lhs = getattr(child, "lhs", None)
    if isinstance(child, Lookup) and isinstance(lhs, Col) and lhs.alias == query.base_table:
        name = lhs.target.name
        return name if child.lookup_name == "exact" else f"{name}__{child.lookup_name}"
    return "..."


def _related_names(select_related: Any, prefix: str = "") -> list[str]:
    if not isinstance(select_related, dict):
        return []
    names = []
    for name, deeper in select_related.items():
        below = _related_names(deeper, f"{prefix}{name}__")
        names.extend(below or [f"{prefix}{name}"])
    return names


def _trail_setter(
    setter: Callable[[Any, Any], None], klass_info: dict[str, Any], parents: dict[int, Any]
) -> Callable[[Any, Any], None]:
    """A select_related setter that also leaves a trail back to the parent row.

    Objects loaded by a join are reached from their parent without a query;
    a lazy load from them (``book.author.profile`` after
    ``select_related("author")``) must name the whole path.
    """
    field = klass_info["field"]
    if klass_info["reverse"]:
        related = field.remote_field
        attribute = getattr(related, "accessor_name", None) or related.get_accessor_name()
    else:
        attribute = field.name

    def set_and_remember(from_obj: Any, obj: Any) -> None:
        setter(from_obj, obj)
        if obj is not None:
            parents[id(obj)] = (obj, from_obj, attribute, SINGLE)

    return set_and_remember


def _recording_populator(original: Callable[..., None]) -> Callable[..., None]:
    """Give select_related's populators a trail setter while a recording is on."""

    # Django's own signature varies (6.1 added an argument): pass it all on.
    @functools.wraps(original)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        recorder = current_recorder()
        if recorder is not None:
            try:
                klass_info = args[0] if args else kwargs["klass_info"]
                self.local_setter = _trail_setter(self.local_setter, klass_info, recorder.parents)
            except Exception:
                report_internal_error("following a select_related join")

    return __init__


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
) -> tuple[tuple[Segment, ...], str | None, str]:
    """The path from a root queryset to ``instance``.

    Returns ``(path, weak_via, root)``: ``root`` is the label of the model
    the path starts from (``shop.Book``). ``weak_via`` names a relation whose N+1
    must be present in the same request for the path to be trusted: a book
    whose ``author`` is cached may come from ``author.books.all()`` (then
    ``shop.Author.books`` is an N+1 too) or from ``select_related("author")``.
    """
    if id(instance) not in recorder.parents:
        # The common case, a loop's row straight from its queryset: not
        # loaded lazily, and nothing cached on it but what ``skip`` names,
        # so no parent to walk to. One look instead of the walk's set and
        # loop, per lazy load.
        cache = getattr(getattr(instance, "_state", None), "fields_cache", None)
        if not cache or (len(cache) == 1 and skip in cache):
            return (), None, model_label(type(instance))
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
    return tuple(path), weak_via, model_label(type(current))


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
