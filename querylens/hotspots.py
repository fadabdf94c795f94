"""What the admin pages show, computed from stored request records.

Pure functions over ``RequestRecord``s, no Django request or template here:

* ``build_report(records)``: N+1 groups and duplicate groups aggregated
  across the buffered requests by fingerprint and call site, ranked by the
  time a fix would save;
* ``filter_records(...)``: the request list's filters;
* ``query_roles(record)`` and ``waterfall(...)``: what the request page
  draws next to each query.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from querylens.fingerprint import is_transaction_control
from querylens.records import CallSite, QueryRecord, QueryView, RequestRecord

HotspotKind = Literal["n_plus_one", "duplicate", "slow"]
#: Slow-query hotspots shown, and exported, at most.
SLOW_LIMIT = 50

#: Queries per page of the request page (links to a query need its page).
QUERIES_PER_PAGE = 100


@dataclass
class RequestRef:
    """One request in which a hotspot occurred, and how badly."""

    id: str
    method: str
    path: str
    started_at: dt.datetime
    #: Queries of the hotspot in that request.
    count: int
    #: Their database time in that request, in ms.
    total_ms: float
    #: Index of the group's first query, for a link straight to it.
    first_index: int | None

    @property
    def anchor(self) -> str:
        """``?page=N#q-I``: where the group's first query is on the request page."""
        if self.first_index is None:
            return ""
        return f"?page={self.first_index // QUERIES_PER_PAGE + 1}#q-{self.first_index}"


@dataclass
class Hotspot:
    """One repeated query shape from one call site, across requests."""

    kind: HotspotKind
    fingerprint: str
    callsite: CallSite | None
    relation: str | None = None
    suggestion: str | None = None
    sample_sql: str = ""
    #: Queries run, over every request it occurred in.
    occurrences: int = 0
    #: Requests it occurred in.
    requests: int = 0
    total_ms: float = 0.0
    #: Estimated time a fix saves: the total minus one query's worth per
    #: request (``select_related`` saves even that one, ``prefetch_related``
    #: and a cached duplicate keep it).
    saved_ms: float = 0.0
    views: list[tuple[str, int]] = field(default_factory=list)
    paths: list[tuple[str, int]] = field(default_factory=list)
    newest: RequestRef | None = None
    worst: RequestRef | None = None
    #: The allow entry's reason, when one accepts this N+1 (``QUERYLENS["ALLOW"]``).
    allowed: str | None = None
    #: The longest single query of this shape, in ms (slow-query hotspots).
    max_ms: float = 0.0
    #: The installed package whose code ran it, when no project code did.
    package: str | None = None
    _relations: Counter[str] = field(default_factory=Counter, repr=False)
    _suggestions: Counter[str] = field(default_factory=Counter, repr=False)
    _views: Counter[str] = field(default_factory=Counter, repr=False)
    _paths: Counter[str] = field(default_factory=Counter, repr=False)

    @property
    def in_project(self) -> bool:
        """Whether the project's code (a line, a template, a declaration) is its call site."""
        return self.callsite is not None

    @property
    def avg_ms(self) -> float:
        """Mean time of one query of this shape."""
        return self.total_ms / self.occurrences if self.occurrences else 0.0

    @property
    def key(self) -> str:
        """A short stable id, for anchors and test selectors."""
        where = str(self.callsite) if self.callsite else ""
        text = f"{self.kind}|{self.fingerprint}|{where}".encode()
        return hashlib.blake2b(text, digest_size=6).hexdigest()

    @property
    def label(self) -> str:
        """What the ranking picture calls it: the relation and where, else the call site."""
        if self.relation:
            return f"{self.relation} at {self.callsite}" if self.callsite else self.relation
        if self.callsite:
            return f"{self.callsite.function} ({self.callsite})"
        return " ".join(self.sample_sql.split())[:60] or f"query {self.fingerprint[:8]}"

    def _add(
        self,
        record: RequestRecord,
        *,
        count: int,
        total_ms: float,
        sample_sql: str,
        relation: str | None,
        suggestion: str | None,
        first_index: int | None,
    ) -> None:
        self.occurrences += count
        self.requests += 1
        self.total_ms += total_ms
        if count:
            self.saved_ms += total_ms - total_ms / count
        if relation:
            self._relations[relation] += 1
        if suggestion:
            self._suggestions[suggestion] += 1
        self._views[record.view or "?"] += 1
        self._paths[record.path] += 1
        ref = RequestRef(
            id=record.id,
            method=record.method,
            path=record.path,
            started_at=record.started_at,
            count=count,
            total_ms=total_ms,
            first_index=first_index,
        )
        if self.newest is None or record.started_at > self.newest.started_at:
            self.newest = ref
            self.sample_sql = sample_sql
        if self.worst is None or (total_ms, count) > (self.worst.total_ms, self.worst.count):
            self.worst = ref

    def to_dict(self) -> dict[str, Any]:
        """The hotspot as the hotspots page's JSON export gives it."""
        worst = self.worst
        return {
            "kind": self.kind,
            "fingerprint": self.fingerprint,
            "callsite": self.callsite.to_dict() if self.callsite else None,
            "relation": self.relation,
            "suggestion": self.suggestion,
            "allowed": self.allowed,
            "package": self.package,
            "sample_sql": self.sample_sql,
            "occurrences": self.occurrences,
            "requests": self.requests,
            "total_ms": self.total_ms,
            "mean_ms": round(self.avg_ms, 3),
            "max_ms": round(self.max_ms, 3),
            "saved_ms": self.saved_ms,
            "views": [view for view, _ in self.views],
            "paths": [path for path, _ in self.paths],
            "worst": (
                {
                    "request_id": worst.id,
                    "query_index": worst.first_index,
                    "total_ms": worst.total_ms,
                }
                if worst
                else None
            ),
        }

    def _finish(self) -> None:
        self.total_ms = round(self.total_ms, 3)
        self.saved_ms = round(self.saved_ms, 3)
        self.relation = _most_common(self._relations)
        self.suggestion = _most_common(self._suggestions)
        self.views = self._views.most_common()
        self.paths = self._paths.most_common()


@dataclass
class HotspotReport:
    """Every hotspot in the buffer, worst first, and what the buffer holds."""

    n_plus_one: list[Hotspot]
    duplicates: list[Hotspot]
    request_count: int
    oldest: dt.datetime | None
    newest: dt.datetime | None
    #: Every query shape, by total database time across the requests.
    slow: list[Hotspot] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "request_count": self.request_count,
            "oldest": self.oldest.isoformat() if self.oldest else None,
            "newest": self.newest.isoformat() if self.newest else None,
            "saved_ms": self.saved_ms,
            "n_plus_one": [spot.to_dict() for spot in self.n_plus_one],
            "duplicates": [spot.to_dict() for spot in self.duplicates],
            "slow": [spot.to_dict() for spot in self.slow],
        }

    @property
    def ranking(self) -> list[Hotspot]:
        """N+1 and duplicate hotspots together, by time a fix would save.

        The project's own first: what runs inside installed packages (no
        call site in the project) comes after, however slow.
        """
        spots = [*self.n_plus_one, *self.duplicates]
        return _ranked([s for s in spots if s.in_project]) + _ranked(
            [s for s in spots if not s.in_project]
        )

    @property
    def project_n_plus_one(self) -> list[Hotspot]:
        """N+1 hotspots with a call site in the project's code."""
        return [spot for spot in self.n_plus_one if spot.in_project]

    @property
    def package_n_plus_one(self) -> list[Hotspot]:
        """N+1 hotspots that ran inside installed packages."""
        return [spot for spot in self.n_plus_one if not spot.in_project]

    @property
    def saved_ms(self) -> float:
        return round(sum(h.saved_ms for h in self.n_plus_one + self.duplicates), 3)


def build_report(records: Iterable[RequestRecord]) -> HotspotReport:
    """Aggregate N+1 and duplicate groups by fingerprint and call site.

    A duplicate group whose queries all belong to N+1 groups of the same
    request is left out: fixing the N+1 removes it, and counting it twice
    would inflate the ranking. Repeated transaction statements (``BEGIN``,
    ``COMMIT``) are left out too.
    """
    n_plus_one: dict[tuple[str, CallSite | None, str | None], Hotspot] = {}
    duplicates: dict[tuple[str, CallSite | None], Hotspot] = {}
    slow: dict[str, Hotspot] = {}
    request_count = 0
    oldest: dt.datetime | None = None
    newest: dt.datetime | None = None
    for record in records:
        request_count += 1
        oldest = record.started_at if oldest is None else min(oldest, record.started_at)
        newest = record.started_at if newest is None else max(newest, record.started_at)
        # Columns, not query records: a full buffer is aggregated without
        # building (and keeping) an object per query.
        view = record.query_view()
        position = _positions(view)
        in_n_plus_one: set[int] = set()
        for group in record.n_plus_one:
            in_n_plus_one.update(group.query_indexes)
            spot = n_plus_one.setdefault(
                (group.fingerprint, group.callsite, group.package),
                Hotspot(
                    kind="n_plus_one",
                    fingerprint=group.fingerprint,
                    callsite=group.callsite,
                    package=group.package,
                ),
            )
            spot._add(
                record,
                count=group.count,
                total_ms=group.total_ms,
                sample_sql=group.sample_sql,
                relation=group.relation,
                suggestion=group.suggestion,
                first_index=group.query_indexes[0] if group.query_indexes else None,
            )
            if group.allowed:
                spot.allowed = group.allowed
        for dup in record.duplicates_once():
            if dup.query_indexes and in_n_plus_one.issuperset(dup.query_indexes):
                continue
            if is_transaction_control(dup.sql):
                # Two BEGINs in a request are bookkeeping, not a query to cache.
                continue
            # Members an N+1 group holds are counted there: each query's
            # time once across the rankings.
            members = [
                position[i] for i in dup.query_indexes if i in position and i not in in_n_plus_one
            ]
            if len(members) < 2 and len(members) < len(dup.query_indexes):
                continue
            callsite = view.callsite(members[0]) if members else None
            spot = duplicates.setdefault(
                (dup.fingerprint, callsite),
                Hotspot(kind="duplicate", fingerprint=dup.fingerprint, callsite=callsite),
            )
            relations = (view.relations[member] for member in members)
            spot._add(
                record,
                count=len(members) if members else dup.count,
                total_ms=sum(view.durations_ms[member] for member in members),
                sample_sql=dup.sql,
                relation=_most_common(Counter(name for name in relations if name)),
                suggestion=None,
                first_index=dup.query_indexes[0] if dup.query_indexes else None,
            )
        _add_slow(slow, record, view)
    for spot in (*n_plus_one.values(), *duplicates.values(), *slow.values()):
        spot._finish()
    return HotspotReport(
        n_plus_one=_ranked(n_plus_one.values()),
        duplicates=_ranked(duplicates.values()),
        request_count=request_count,
        oldest=oldest,
        newest=newest,
        slow=sorted(slow.values(), key=lambda s: (-s.total_ms, -s.max_ms, s.fingerprint))[
            :SLOW_LIMIT
        ],
    )


def _positions(view: QueryView) -> Mapping[int, int] | range:
    """Query index -> its position in ``view``.

    A record analysed in this process numbers its queries 0, 1, 2...: its
    range is that mapping already (``i in r`` and ``r[i]``), with no dict.
    """
    indexes = view.indexes
    if isinstance(indexes, range) and indexes.start == 0 and indexes.step == 1:
        return indexes
    return {index: number for number, index in enumerate(indexes)}


def _add_slow(slow: dict[str, Hotspot], record: RequestRecord, view: QueryView) -> None:
    """Add one record's queries to the slow-query ranking, by fingerprint.

    The worst request is the one holding the slowest single instance: the
    one worth opening in EXPLAIN.
    """
    shapes: dict[str, list[int]] = {}
    sqls, fingerprints, durations = view.sqls, view.fingerprints, view.durations_ms
    for position, sql in enumerate(sqls):
        if not is_transaction_control(sql):
            shapes.setdefault(fingerprints[position], []).append(position)
    for fingerprint, members in shapes.items():
        spot = slow.get(fingerprint)
        if spot is None:
            spot = slow[fingerprint] = Hotspot(
                kind="slow", fingerprint=fingerprint, callsite=view.callsite(members[0])
            )
        slowest = max(members, key=durations.__getitem__)
        slowest_ms = durations[slowest]
        first_index = view.indexes[slowest]
        worst_before = spot.worst
        spot._add(
            record,
            count=len(members),
            total_ms=sum(durations[member] for member in members),
            sample_sql=sqls[slowest],
            relation=None,
            suggestion=None,
            first_index=first_index,
        )
        if slowest_ms >= spot.max_ms:
            spot.max_ms = slowest_ms
            spot.worst = RequestRef(
                id=record.id,
                method=record.method,
                path=record.path,
                started_at=record.started_at,
                count=len(members),
                total_ms=slowest_ms,
                first_index=first_index,
            )
        else:
            spot.worst = worst_before
        spot.saved_ms = 0.0  # a slow query is sped up, not removed


def filter_records(
    records: Iterable[RequestRecord], *, path: str = "", n_plus_one: bool = False
) -> list[RequestRecord]:
    """Records whose path contains ``path`` (any case), optionally only those with an N+1."""
    needle = path.strip().casefold()
    return [
        record
        for record in records
        if (not needle or needle in record.path.casefold())
        and (not n_plus_one or record.n_plus_one_count)
    ]


@dataclass
class QueryRole:
    """How a query takes part in a request's problems."""

    #: 1-based number of the N+1 group it belongs to, if any.
    n_plus_one: int | None = None
    #: 1-based number of the duplicate group it belongs to, if any.
    duplicate: int | None = None

    @property
    def css(self) -> str:
        if self.n_plus_one is not None:
            return "ql-n1"
        if self.duplicate is not None:
            return "ql-dup"
        return "ql-plain"


def query_roles(record: RequestRecord) -> dict[int, QueryRole]:
    """Query index -> its N+1 / duplicate group numbers (only queries in a group)."""
    roles: dict[int, QueryRole] = {}
    for number, group in enumerate(record.n_plus_one, start=1):
        for index in group.query_indexes:
            roles.setdefault(index, QueryRole()).n_plus_one = number
    for number, dup in enumerate(record.duplicates, start=1):
        for index in dup.query_indexes:
            roles.setdefault(index, QueryRole()).duplicate = number
    return roles


@dataclass
class Bar:
    """One query in the waterfall, in SVG user units."""

    query: QueryRecord
    x: float
    y: float
    width: float
    css: str


@dataclass
class Waterfall:
    """Geometry of the request page's timeline (an inline SVG)."""

    width: int
    height: int
    total_ms: float
    bars: list[Bar]
    ticks: list[tuple[float, str]]
    axis_y: int
    row_height: int


def waterfall(
    record: RequestRecord,
    queries: Sequence[QueryRecord],
    roles: dict[int, QueryRole],
    *,
    width: int = 1000,
    row: int = 9,
) -> Waterfall:
    """One bar per query from its start to its end, on the request's time axis.

    The axis spans the whole request (or the last query's end if later), so
    every page of queries is drawn on the same scale.
    """
    ends = [q.start_ms + q.duration_ms for q in record.queries]
    total = max([record.duration_ms, *ends, 0.001])
    axis_y = 14
    bars = []
    for position, query in enumerate(queries):
        role = roles.get(query.index)
        bars.append(
            Bar(
                query=query,
                x=round(query.start_ms / total * width, 2),
                y=axis_y + 6 + position * row,
                # A query shorter than a pixel still gets a visible mark.
                width=round(max(query.duration_ms / total * width, 3.0), 2),
                css=role.css if role else "ql-plain",
            )
        )
    ticks = [(round(width * f, 2), f"{total * f:.1f} ms") for f in (0, 0.25, 0.5, 0.75, 1)]
    return Waterfall(
        width=width,
        height=axis_y + 10 + len(bars) * row,
        total_ms=round(total, 3),
        bars=bars,
        ticks=ticks,
        axis_y=axis_y,
        row_height=row - 2,
    )


@dataclass
class RankingBar:
    """One row of the hotspots page's ranking picture, in SVG user units."""

    hotspot: Hotspot
    rank: int
    y: int
    width: float

    @property
    def text_y(self) -> int:
        return self.y + 17

    @property
    def bar_y(self) -> int:
        return self.y + 4

    @property
    def value_x(self) -> float:
        return round(RANKING_BAR_X + self.width + 6, 2)


#: Where the bars start in the ranking picture (labels sit left of it).
RANKING_BAR_X = 420
RANKING_BAR_WIDTH = 470
RANKING_ROW = 26


@dataclass
class RankingChart:
    bars: list[RankingBar]
    height: int
    bar_x: int = RANKING_BAR_X
    bar_width: int = RANKING_BAR_WIDTH


def ranking_chart(ranking: Sequence[Hotspot], *, limit: int = 10) -> RankingChart:
    """Bars proportional to the time each of the worst hotspots wastes."""
    shown = list(ranking[:limit])
    top = max([spot.saved_ms for spot in shown] + [0.0])
    bars = [
        RankingBar(
            hotspot=spot,
            rank=rank,
            y=(rank - 1) * RANKING_ROW,
            width=round(max(spot.saved_ms / top * RANKING_BAR_WIDTH, 2.0) if top else 2.0, 2),
        )
        for rank, spot in enumerate(shown, start=1)
    ]
    return RankingChart(bars=bars, height=len(bars) * RANKING_ROW)


def _ranked(spots: Iterable[Hotspot]) -> list[Hotspot]:
    return sorted(spots, key=lambda s: (-s.saved_ms, -s.occurrences, -s.total_ms, s.fingerprint))


def _most_common(counter: Counter[str]) -> str | None:
    if not counter:
        return None
    return counter.most_common(1)[0][0]
