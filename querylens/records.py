"""Plain records of what a request did, and their JSON shape.

These dataclasses are the public contract served by the JSON export and
stored by the ring buffer; ``to_dict()`` gives exactly the shape documented in
DESIGN.md (plus a few additive keys) and ``from_dict()`` reads it back.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol


@dataclass(frozen=True, slots=True)
class CallSite:
    """A place in the user's code or templates: ``file:line`` in ``function``.

    For a template, ``file`` is the template name and ``function`` is
    ``"<template>"``.
    """

    file: str
    line: int
    function: str

    TEMPLATE: ClassVar[str] = "<template>"

    @property
    def is_template(self) -> bool:
        return self.function == self.TEMPLATE

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "function": self.function}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> CallSite | None:
        if not data:
            return None
        return cls(file=str(data["file"]), line=int(data["line"]), function=str(data["function"]))


@dataclass(slots=True)
class QueryRecord:
    """One query of a request."""

    index: int
    alias: str
    sql: str
    params: Any
    duration_ms: float
    fingerprint: str
    callsite: CallSite | None
    stack: list[CallSite] = field(default_factory=list)
    relation: str | None = None
    start_ms: float = 0.0
    many: bool = False
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "alias": self.alias,
            "sql": self.sql,
            "params": self.params,
            "duration_ms": self.duration_ms,
            "fingerprint": self.fingerprint,
            "callsite": self.callsite.to_dict() if self.callsite else None,
            "relation": self.relation,
            "stack": [site.to_dict() for site in self.stack],
            "start_ms": self.start_ms,
            "many": self.many,
            "error": self.error,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QueryRecord:
        return cls(
            index=int(data["index"]),
            alias=str(data["alias"]),
            sql=str(data["sql"]),
            params=data.get("params"),
            duration_ms=float(data["duration_ms"]),
            fingerprint=str(data["fingerprint"]),
            callsite=CallSite.from_dict(data.get("callsite")),
            stack=[s for s in map(CallSite.from_dict, data.get("stack") or []) if s is not None],
            relation=data.get("relation"),
            start_ms=float(data.get("start_ms") or 0.0),
            many=bool(data.get("many", False)),
            error=data.get("error"),
        )


@dataclass(frozen=True)
class QueryView:
    """A record's queries, column by column, for readers of many records (the hotspots).

    Read from the analysis's columns when the query records were not built:
    aggregating a full buffer then builds no ``QueryRecord`` and leaves each
    record as compact as the buffer keeps it. Position ``p`` is the query
    numbered ``indexes[p]``.
    """

    indexes: Sequence[int]
    fingerprints: Sequence[str]
    sqls: Sequence[str]
    durations_ms: Sequence[float]
    relations: Sequence[str | None]
    #: The call site of the query at a position.
    callsite: Callable[[int], CallSite | None]

    @classmethod
    def of(cls, queries: Sequence[QueryRecord]) -> QueryView:
        """The view of built query records."""
        return cls(
            indexes=[query.index for query in queries],
            fingerprints=[query.fingerprint for query in queries],
            sqls=[query.sql for query in queries],
            durations_ms=[query.duration_ms for query in queries],
            relations=[query.relation for query in queries],
            callsite=lambda position: queries[position].callsite,
        )


@dataclass
class DuplicateGroup:
    """Identical queries (same alias, SQL and params) run more than once."""

    fingerprint: str
    count: int
    sql: str
    query_indexes: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "count": self.count,
            "sql": self.sql,
            "query_indexes": list(self.query_indexes),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DuplicateGroup:
        return cls(
            fingerprint=str(data["fingerprint"]),
            count=int(data["count"]),
            sql=str(data["sql"]),
            query_indexes=[int(i) for i in data.get("query_indexes") or []],
        )


@dataclass
class NPlusOneGroup:
    """Queries with one fingerprint repeated from one user call stack."""

    fingerprint: str
    count: int
    total_ms: float
    callsite: CallSite | None
    relation: str | None
    suggestion: str | None
    sample_sql: str
    query_indexes: list[int] = field(default_factory=list)
    #: The reason of the allow entry (``QUERYLENS["ALLOW"]``) accepting it.
    allowed: str | None = None
    #: What helps when no one-line fix does (a walk up a tree).
    note: str | None = None
    #: For a group no project code ran: the installed package whose code
    #: did (``wagtail``, ``django``), else None.
    package: str | None = None
    #: Index of the query that loaded the objects the group loops over
    #: (the queryset to paste the fix on), when it can be told.
    source_query: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "count": self.count,
            "total_ms": self.total_ms,
            "callsite": self.callsite.to_dict() if self.callsite else None,
            "relation": self.relation,
            "suggestion": self.suggestion,
            "sample_sql": self.sample_sql,
            "query_indexes": list(self.query_indexes),
            "allowed": self.allowed,
            "note": self.note,
            "package": self.package,
            "source_query": self.source_query,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NPlusOneGroup:
        return cls(
            fingerprint=str(data["fingerprint"]),
            count=int(data["count"]),
            total_ms=float(data["total_ms"]),
            callsite=CallSite.from_dict(data.get("callsite")),
            relation=data.get("relation"),
            suggestion=data.get("suggestion"),
            sample_sql=str(data["sample_sql"]),
            query_indexes=[int(i) for i in data.get("query_indexes") or []],
            allowed=data.get("allowed"),
            note=data.get("note"),
            package=data.get("package"),
            source_query=data.get("source_query"),
        )


@dataclass
class RequestRecord:
    """Everything querylens learnt about one request."""

    id: str
    method: str
    path: str
    view: str | None
    status: int | None
    started_at: dt.datetime
    duration_ms: float
    db_time_ms: float
    query_count: int
    duplicate_count: int
    queries: list[QueryRecord] = field(default_factory=list)
    duplicates: list[DuplicateGroup] = field(default_factory=list)
    n_plus_one: list[NPlusOneGroup] = field(default_factory=list)
    #: Queries that ran but were not stored (over ``MAX_QUERIES_PER_REQUEST``).
    truncated: int = 0

    def defer(self, source: DeferredSource) -> None:
        """Let ``queries`` and ``duplicates`` be built by ``source`` when first read.

        The analysis keeps what the verdicts and counts need, column by
        column; each query's record and each duplicate group is made only for
        whoever reads them (a page, the panel, a shared storage's writer
        thread), not on the request's path. Meanwhile a buffer of records
        holds a few objects per record for the garbage collector to visit,
        not several per query.
        """
        for name in _DEFERRED:
            self.__dict__.pop(f"_{name}", None)
        self.__dict__[_SOURCE] = source

    def query_view(self) -> QueryView:
        """The queries as columns, without building their records if they are not yet."""
        source = self._unbuilt_source("_queries")
        if source is not None:
            return source.query_view()
        return QueryView.of(self.queries)

    def duplicates_once(self) -> list[DuplicateGroup]:
        """``duplicates``, built for this read only if the record has not built them.

        For readers of many records (the hotspots): what they read is not
        kept in each record of the buffer.
        """
        source = self._unbuilt_source("_duplicates")
        if source is not None:
            return source.build_duplicates()
        return self.duplicates

    def _unbuilt_source(self, kept: str) -> DeferredSource | None:
        state = self.__dict__
        source: DeferredSource | None = state.get(_SOURCE)
        return source if state.get(kept) is None else None

    def __getstate__(self) -> dict[str, Any]:
        # The source is the analysis's: pickled, a record carries its lists.
        state = dict(self.__dict__)
        for name in _DEFERRED:
            state[f"_{name}"] = getattr(self, name)
        state.pop(_SOURCE, None)
        return state

    @property
    def n_plus_one_count(self) -> int:
        """N+1 groups, leaving out those an allow entry accepts."""
        return sum(1 for group in self.n_plus_one if group.allowed is None)

    @property
    def unexpected_n_plus_one(self) -> list[NPlusOneGroup]:
        """The N+1 groups no allow entry accepts."""
        return [group for group in self.n_plus_one if group.allowed is None]

    def repeats_in_n_plus_one(self) -> dict[int, int]:
        """N+1 group number -> how many of its queries repeat an earlier one exactly."""
        repeats: dict[int, int] = {}
        for dup_number, number in self.duplicates_in_n_plus_one().items():
            repeats[number] = repeats.get(number, 0) + self.duplicates[dup_number - 1].count - 1
        return repeats

    def duplicates_in_n_plus_one(self) -> dict[int, int]:
        """Duplicate group number -> the N+1 group number holding all its queries."""
        within = {}
        for dup_number, dup in enumerate(self.duplicates, start=1):
            for number, group in enumerate(self.n_plus_one, start=1):
                if dup.query_indexes and set(dup.query_indexes) <= set(group.query_indexes):
                    within[dup_number] = number
                    break
        return within

    def to_dict(self) -> dict[str, Any]:
        data = self.to_dict_without_queries()
        data["queries"] = [query.to_dict() for query in self.queries]
        return data

    def to_dict_without_queries(self) -> dict[str, Any]:
        """``to_dict()`` with ``queries`` left empty (a storage writes them its own way)."""
        return {
            "id": self.id,
            "method": self.method,
            "path": self.path,
            "view": self.view,
            "status": self.status,
            "started_at": self.started_at.isoformat(),
            "duration_ms": self.duration_ms,
            "db_time_ms": self.db_time_ms,
            "query_count": self.query_count,
            "duplicate_count": self.duplicate_count,
            "queries": [],
            "duplicates": [group.to_dict() for group in self.duplicates],
            "n_plus_one": [group.to_dict() for group in self.n_plus_one],
            "truncated": self.truncated,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RequestRecord:
        status = data.get("status")
        return cls(
            id=str(data["id"]),
            method=str(data["method"]),
            path=str(data["path"]),
            view=data.get("view"),
            status=int(status) if status is not None else None,
            started_at=dt.datetime.fromisoformat(str(data["started_at"])),
            duration_ms=float(data["duration_ms"]),
            db_time_ms=float(data["db_time_ms"]),
            query_count=int(data["query_count"]),
            duplicate_count=int(data["duplicate_count"]),
            queries=[QueryRecord.from_dict(q) for q in data.get("queries") or []],
            duplicates=[DuplicateGroup.from_dict(g) for g in data.get("duplicates") or []],
            n_plus_one=[NPlusOneGroup.from_dict(g) for g in data.get("n_plus_one") or []],
            truncated=int(data.get("truncated") or 0),
        )


#: Fields whose value may be built when first read (``RequestRecord.defer``).
_DEFERRED = ("queries", "duplicates")
#: Where a record keeps the ``DeferredSource`` of its deferred fields.
_SOURCE = "_source"


class DeferredSource(Protocol):
    """What builds a record's deferred fields (``querylens.analysis.Facts``)."""

    def build_queries(self) -> list[QueryRecord]: ...

    def build_duplicates(self) -> list[DuplicateGroup]: ...

    def query_view(self) -> QueryView: ...


def _deferred(name: str) -> property:
    """A property over the dataclass field ``name`` whose list may be built on first read.

    The constructor, equality, repr and ``dataclasses.replace()`` all go
    through it, so a deferred list is built when any of them needs it.
    """
    kept, builder = f"_{name}", f"build_{name}"
    others = tuple(f"_{other}" for other in _DEFERRED if other != name)

    def get(record: RequestRecord) -> list[Any]:
        state = record.__dict__
        value: list[Any] | None = state.get(kept)
        if value is None:
            source = state.get(_SOURCE)
            value = getattr(source, builder)() if source is not None else []
            # Two threads may build at once: both lists are equal, one is kept.
            state[kept] = value
            _forget_source(state, others)
        return value

    def set_(record: RequestRecord, value: list[Any]) -> None:
        state = record.__dict__
        state[kept] = value
        _forget_source(state, others)

    return property(get, set_)


def _forget_source(state: dict[str, Any], others: tuple[str, ...]) -> None:
    """Drop the source once every deferred field has its list."""
    if all(other in state for other in others):
        state.pop(_SOURCE, None)


RequestRecord.queries = _deferred("queries")  # type: ignore[assignment]
RequestRecord.duplicates = _deferred("duplicates")  # type: ignore[assignment]
