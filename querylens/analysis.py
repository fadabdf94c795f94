"""Analysis: from captured queries to duplicates, N+1 groups and fixes.

Runs once per request, after the response is built, never per query.
"""

from __future__ import annotations

import datetime as dt
import decimal
import os
import re
import sys
import uuid
from collections import Counter
from collections.abc import Sequence
from typing import Any, NamedTuple

from querylens import capture
from querylens.allow import AllowRule
from querylens.allow import mark as mark_allowed
from querylens.capture import (
    PLUMBING,
    CapturedQueries,
    RawFrame,
    RawQuery,
    Recorder,
    Segment,
    code_objects,
    top_package,
)
from querylens.fingerprint import fingerprint, is_transaction_control
from querylens.fixes import WALK_NOTE, Fix, Refinement, fix_for
from querylens.frameworks import SERIALIZER_NOTE, AdminPage, serializer_site
from querylens.frameworks import adapt as adapt_to_admin
from querylens.records import (
    CallSite,
    DuplicateGroup,
    NPlusOneGroup,
    QueryRecord,
    QueryView,
    RequestRecord,
)
from querylens.redaction import Redactor, redactor

_MAX_PARAM_LENGTH = 1000


def build_record(
    recorder: Recorder,
    *,
    request_id: str,
    method: str,
    path: str,
    view: str | None,
    status: int | None,
    started_at: dt.datetime,
    duration_ms: float,
    threshold: int,
    record_params: bool,
    allow: Sequence[AllowRule] = (),
    admin: AdminPage | None = None,
) -> RequestRecord:
    """Analyse a recorder's queries into a ``RequestRecord``.

    ``admin``: the Django admin page the request was, whose ModelAdmin is
    named where the admin's own code ran the queries.
    """
    raw = CapturedQueries(recorder)
    _forget_forgotten_code()
    queries = Facts(raw, redactor())
    duplicates = duplicate_sets(raw)
    groups = n_plus_one_groups(raw, queries, threshold)
    if admin is not None:
        adapt_to_admin(groups, admin)
    mark_allowed(groups, allow)
    record = RequestRecord(
        id=request_id,
        method=method,
        path=path,
        view=view,
        status=status,
        started_at=started_at,
        duration_ms=round(duration_ms, 3),
        db_time_ms=round(recorder.db_time * 1000, 3),
        query_count=recorder.count,
        duplicate_count=sum(len(indexes) - 1 for indexes in duplicates),
        n_plus_one=groups,
        truncated=recorder.count - len(raw),
    )
    # The headers need only the counts: each query's record (call-site list,
    # parameters as JSON) is built when something reads ``record.queries``
    # (a page, the panel, a shared storage's writer thread), not in the request.
    queries.record_params = record_params
    queries.duplicate_sets = duplicates
    record.defer(queries)
    return record


class _Fact(NamedTuple):
    fingerprint: str
    sql: str
    callsite: CallSite | None


class Facts:
    """What the verdicts need of each query, made without building its record.

    Redaction happens here, in the request, before anything is kept: the
    record's deferred build holds the redacted SQL, parameters and errors,
    and of the captured query only what carries no value (alias, timings,
    stack, relation), never the raw parameters.
    """

    __slots__ = (
        "aliases",
        "duplicate_sets",
        "durations",
        "errors",
        "fingerprints",
        "manys",
        "params",
        "record_params",
        "relations",
        "sqls",
        "stacks",
        "starts",
    )

    def __init__(self, raw: CapturedQueries, redact: Redactor | None) -> None:
        raw_sqls, raw_params = raw.sqls, raw.params
        self.fingerprints = tuple([fingerprint(sql) for sql in raw_sqls])
        sqls, params, errors = list(raw_sqls), list(raw_params), list(raw.errors)
        if redact is not None:
            # After the verdicts' inputs are taken (the real values), before
            # anything is kept. A statement's plan is cached by its text: for
            # the many that touch no secret, one dict lookup.
            plan, manys = redact.plan, raw.manys
            for index, sql in enumerate(raw_sqls):
                error = errors[index]
                if error is not None:
                    errors[index] = redact.error(sql, raw_params[index], manys[index], error)
                if plan(sql) is not None:
                    sqls[index] = redact.sql(sql)
                    params[index] = redact.params(sql, raw_params[index], manys[index])
        # One tuple per column, not one object per query: a buffered record
        # is a handful of objects, and a tuple of strings, numbers and
        # tuples of those is one the garbage collector stops tracking at
        # its first pass (a list it visits, item by item, in every pass).
        self.sqls: tuple[str, ...] = tuple(sqls)
        self.params: tuple[Any, ...] = tuple(params)
        self.errors: tuple[str | None, ...] = tuple(errors)
        self.aliases = raw.aliases
        self.durations = raw.durations
        self.starts = raw.starts
        self.stacks = raw.stacks
        self.relations = tuple(raw.relations())
        self.manys = raw.manys
        #: Set by ``build_record``: what the deferred builds need.
        self.record_params = True
        self.duplicate_sets: tuple[tuple[int, ...], ...] = ()

    def __getitem__(self, index: int) -> _Fact:
        stack = self.stacks[index]
        return _Fact(
            self.fingerprints[index], self.sqls[index], call_stack(stack)[0] if stack else None
        )

    def build_queries(self) -> list[QueryRecord]:
        """Every query's record (``RequestRecord.queries``, built when first read)."""
        return self.records(self.record_params)

    def build_duplicates(self) -> list[DuplicateGroup]:
        """The duplicate groups (``RequestRecord.duplicates``, built when first read)."""
        return duplicate_groups(self.duplicate_sets, self)

    def query_view(self) -> QueryView:
        """The columns the hotspots read (``RequestRecord.query_view``)."""
        _forget_forgotten_code()
        stacks = self.stacks

        def callsite(position: int) -> CallSite | None:
            stack = stacks[position]
            return call_stack(stack)[0] if stack else None

        return QueryView(
            indexes=range(len(self.sqls)),
            fingerprints=self.fingerprints,
            sqls=self.sqls,
            durations_ms=[round(duration * 1000, 3) for duration in self.durations],
            relations=self.relations,
            callsite=callsite,
        )

    def records(self, record_params: bool) -> list[QueryRecord]:
        """Every query's record."""
        _forget_forgotten_code()
        return [
            _query_record(
                index,
                (
                    self.aliases[index],
                    self.durations[index],
                    self.starts[index],
                    self.stacks[index],
                    self.relations[index],
                    self.manys[index],
                ),
                self.sqls[index],
                _json_params(self.params[index]) if record_params else None,
                self.errors[index],
                self.fingerprints[index],
            )
            for index in range(len(self.sqls))
        ]


def duplicate_sets(raw: CapturedQueries) -> tuple[tuple[int, ...], ...]:
    """Indexes of the queries whose alias, SQL and params equal an earlier query's."""
    seen: dict[tuple[str, str, Any], list[int]] = {}
    keys = zip(raw.aliases, raw.sqls, map(_params_key, raw.params), strict=True)
    for index, key in enumerate(keys):
        seen.setdefault(key, []).append(index)
    return tuple([tuple(indexes) for indexes in seen.values() if len(indexes) > 1])


def duplicate_groups(sets: Sequence[tuple[int, ...]], queries: Facts) -> list[DuplicateGroup]:
    """The ``duplicate_sets`` as the record's groups (built when ``record.duplicates`` is read)."""
    return [
        DuplicateGroup(
            fingerprint=queries.fingerprints[indexes[0]],
            count=len(indexes),
            sql=queries.sqls[indexes[0]],
            query_indexes=list(indexes),
        )
        for indexes in sets
    ]


def n_plus_one_groups(raw: CapturedQueries, queries: Facts, threshold: int) -> list[NPlusOneGroup]:
    """Queries with the same fingerprint from the same user call stack."""
    buckets: dict[tuple[str, str, tuple[RawFrame, ...], int], list[int]] = {}
    aliases, fingerprints, stacks, instructions = (
        raw.aliases,
        queries.fingerprints,
        raw.stacks,
        raw.instructions,
    )
    for index, sql in enumerate(raw.sqls):
        if is_transaction_control(sql):
            # Savepoints get a new name each time; they are never the user's N+1.
            continue
        # Same SQL from the same user call stack; a query no user code ran
        # is keyed by its library code path instead, so that two different
        # library lines (the admin counting its rows twice) stay duplicates.
        # The instruction tells a loop (one instruction, again and again)
        # from a chain on one line (node.parent.parent: two instructions).
        key = (
            aliases[index],
            fingerprints[index],
            stacks[index] or raw.library_path(index),
            instructions[index],
        )
        buckets.setdefault(key, []).append(index)
    batches = raw.batches
    repeated = [
        indexes
        for indexes in buckets.values()
        # Batch loads (a chunked prefetch) repeat by design: not an N+1.
        if len(indexes) >= threshold and not all(i in batches for i in indexes)
    ]
    relations = {_relation_of(raw, indexes)[0] for indexes in repeated} - {None}
    groups = []
    for indexes in repeated:
        first = raw[indexes[0]]
        relation, path, weak_via, root = _relation_of(raw, indexes)
        if weak_via is not None and weak_via not in relations:
            # The path guessed a parent loop that is not an N+1 here (it was
            # a select_related, say): suggest the last step alone.
            path = path[-1:]
            root = relation.rsplit(".", 1)[0] if relation else None
        if _walks_up(raw, indexes):
            fix = Fix(None, WALK_NOTE)
        else:
            fix = fix_for(
                first.sql,
                path,
                relation=relation,
                refinement=_refinement_of(raw, indexes, relation),
                same_params=len({_params_key(raw.params[i]) for i in indexes}) == 1,
                form_choices=_in_form_choices(first),
                # Writes from a template or from a package's own code: not a
                # loop the project wrote, so no bulk_create() to paste.
                not_own_loop=not first.stack or isinstance(first.stack[0][0], str),
            )
        callsite = queries[indexes[0]].callsite
        if callsite is None and first.declaration is not None:
            # Framework code ran it; the project declared the field it rendered.
            callsite = serializer_site(*first.declaration)
            note = f"{SERIALIZER_NOTE} {fix.note}" if fix.note else SERIALIZER_NOTE
            fix = Fix(fix.suggestion, note)
        groups.append(
            NPlusOneGroup(
                fingerprint=queries[indexes[0]].fingerprint,
                count=len(indexes),
                total_ms=round(sum(raw.durations[i] for i in indexes) * 1000, 3),
                callsite=callsite,
                relation=relation,
                suggestion=fix.suggestion,
                sample_sql=queries[indexes[0]].sql,
                query_indexes=indexes,
                note=fix.note,
                package=package_of(first) if callsite is None else None,
                source_query=source_query(raw, indexes, root),
            )
        )
    return groups


def package_of(query: RawQuery) -> str | None:
    """The installed package whose code ran a query no project code ran.

    The innermost frame outside Django, the database drivers and the
    standard library names it (``wagtail``, ``rest_framework``); when there
    is none, Django itself ran it (its admin, say).
    """
    seen_django = False
    for code_id, _line in query.library_path:
        code = code_objects.get(code_id) if isinstance(code_id, int) else None
        if code is None:
            continue
        top = top_package(code.co_filename)
        if top in PLUMBING:
            seen_django = seen_django or top == "django"
        elif top is not None:
            return top
    return "django" if seen_django else None


def _refinement_of(
    raw: CapturedQueries, indexes: Sequence[int], relation: str | None
) -> Refinement | None:
    for i in indexes:
        tag = raw.tags.get(i)
        # A tag is (relation, path, weak_via, refinement, root).
        if tag is not None and tag[0] == relation and tag[3] is not None:
            return tag[3]  # type: ignore[no-any-return]
    return None


_FORMS = os.path.join("django", "forms", "models.py")


def _in_form_choices(query: RawQuery) -> bool:
    """Whether a form choice field's iterator ran the query (no user frame)."""
    for code_id, _line in query.library_path:
        code = code_objects.get(code_id) if isinstance(code_id, int) else None
        if code is not None and code.co_name == "__iter__" and code.co_filename.endswith(_FORMS):
            return True
    return False


def _walks_up(raw: CapturedQueries, indexes: Sequence[int]) -> bool:
    """Whether the group follows one self-referencing relation deeper each time.

    ``while node.parent_id: node = node.parent`` loads ``parent``, then
    ``parent`` of that, and so on: paths of one repeated step, each longer.
    """
    tags = [raw.tags.get(i) for i in indexes]
    paths = [tag[1] for tag in tags if tag is not None]
    if len(paths) < 2:
        return False
    lengths = [len(path) for path in paths]
    return len(set(lengths)) == len(lengths) and all(len(set(path)) == 1 for path in paths)


def _relation_of(
    raw: CapturedQueries, indexes: Sequence[int]
) -> tuple[str | None, tuple[Segment, ...], str | None, str | None]:
    """The most common relation among a group's queries, its path and root model."""
    tags = [tag for tag in map(raw.tags.get, indexes) if tag is not None]
    if not tags:
        return None, (), None, None
    relation, _ = Counter(tag[0] for tag in tags).most_common(1)[0]
    _, path, weak_via, _refinement, root = next(tag for tag in tags if tag[0] == relation)
    return relation, path, weak_via, root


def source_query(raw: CapturedQueries, indexes: Sequence[int], root: str | None) -> int | None:
    """The query that loaded the objects the group loops over, if it can be told.

    The latest query before the group's first one that reads the root
    model's table: where the queryset to fix ran (a template's for loop, a
    view's list()), whoever built it.
    """
    if root is None or not indexes:
        return None
    try:
        from django.apps import apps

        table = apps.get_model(root)._meta.db_table
    except (LookupError, ValueError):
        return None
    reads = re.compile(rf"\bFROM\s+[`\"]?{re.escape(table)}[`\"]?(?:\s|$)", re.IGNORECASE)
    members = set(indexes)
    for index in range(indexes[0] - 1, -1, -1):
        if index not in members and index not in raw.batches and reads.search(raw.sqls[index]):
            return index
    return None


_COMPREHENSIONS = frozenset({"<listcomp>", "<dictcomp>", "<setcomp>", "<genexpr>"})


#: Call-site lists by raw stack. Every query of a loop, and the same page
#: requested again, has an equal stack: sharing one list keeps the ring
#: buffer small and the garbage collector's work with it.
_stacks: dict[tuple[RawFrame, ...], list[CallSite]] = {}


#: The ``capture.code_generation`` the two caches below were filled in.
_generation = [0]


def _forget_forgotten_code() -> None:
    """Drop the call-site caches once capture forgot the code objects they name."""
    if _generation[0] != capture.code_generation:
        _stacks.clear()
        _callsites.clear()
        _generation[0] = capture.code_generation


def call_stack(raw: tuple[RawFrame, ...]) -> list[CallSite]:
    """The call sites of a raw stack, innermost first; one shared list per stack."""
    stack = _stacks.get(raw)
    if stack is None:
        stack = [_callsite(entry) for entry in raw]
        for position, site in enumerate(stack[:-1]):
            outer = stack[position + 1]
            if site.function in _COMPREHENSIONS and outer.file == site.file:
                # Python < 3.12 runs a comprehension as a function of its own;
                # the developer wrote it in the enclosing function.
                stack[position] = CallSite(site.file, site.line, outer.function)
        if len(_stacks) < 10_000:
            _stacks[raw] = stack
    return stack


_Row = tuple[str, float, float, tuple[RawFrame, ...], "str | None", bool]


def _query_record(
    index: int,
    row: _Row,
    sql: str,
    params: Any,
    error: str | None,
    fingerprint: str,
) -> QueryRecord:
    alias, duration, start, raw_stack, relation, many = row
    stack = call_stack(raw_stack)
    return QueryRecord(
        index=index,
        alias=alias,
        sql=sql,
        params=params,
        duration_ms=round(duration * 1000, 3),
        fingerprint=fingerprint,
        callsite=stack[0] if stack else None,
        stack=stack,
        relation=relation,
        start_ms=round(start * 1000, 3),
        many=many,
        error=error,
    )


#: Call sites by raw frame; code objects stay alive in
#: ``capture.code_objects`` so their ids are never reused.
_callsites: dict[RawFrame, CallSite] = {}


def _callsite(entry: RawFrame) -> CallSite:
    site = _callsites.get(entry)
    if site is None:
        where, line = entry
        if isinstance(where, int):
            code = code_objects.get(where)
            if code is None:
                # Forgotten while this request ran (MAX_CODE_OBJECTS): say so.
                return CallSite(file="<forgotten code>", line=line, function="?")
            site = CallSite(file=relative_path(code.co_filename), line=line, function=code.co_name)
        else:
            site = CallSite(file=where, line=line, function=CallSite.TEMPLATE)
        if len(_callsites) < 50_000:
            _callsites[entry] = site
    return site


def relative_path(filename: str) -> str:
    """``filename`` relative to the ``sys.path`` entry it was imported from."""
    absolute = os.path.abspath(filename)
    best = ""
    for entry in sys.path:
        root = os.path.join(os.path.abspath(entry or os.curdir), "")
        if absolute.startswith(root) and len(root) > len(best):
            best = root
    return absolute[len(best) :] if best else filename


def _params_key(params: Any) -> Any:
    try:
        hash(params)
        return params
    except TypeError:
        return repr(params)


_PLAIN = (int, float, bool, type(None))


def _json_params(params: Any) -> Any:
    if params is None:
        return None
    if params.__class__ in (tuple, list) and all(p.__class__ in _PLAIN for p in params):
        return list(params)  # the common case: numbers only
    if isinstance(params, dict):
        return {str(key): _json_value(value) for key, value in params.items()}
    if isinstance(params, (list, tuple)):
        return [
            _json_params(p) if isinstance(p, (list, tuple, dict)) else _json_value(p)
            for p in params
        ]
    return _json_value(params)


def _json_value(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return value if len(value) <= _MAX_PARAM_LENGTH else value[:_MAX_PARAM_LENGTH] + "…"
    if isinstance(value, (dt.datetime, dt.date, dt.time, decimal.Decimal, uuid.UUID)):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<{len(value)} bytes>"
    text = repr(value)
    return text if len(text) <= _MAX_PARAM_LENGTH else text[:_MAX_PARAM_LENGTH] + "…"
