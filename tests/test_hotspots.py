"""Hotspots: N+1 and duplicate groups aggregated across buffered requests."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from querylens.hotspots import (
    RANKING_BAR_WIDTH,
    build_report,
    filter_records,
    query_roles,
    ranking_chart,
    waterfall,
)
from querylens.records import CallSite, DuplicateGroup, NPlusOneGroup, QueryRecord, RequestRecord
from querylens.storage import get_storage
from tests.helpers import line_of

T0 = dt.datetime(2026, 11, 21, 10, 0, tzinfo=dt.timezone.utc)
LOOP = CallSite("shop/views.py", 17, "book_list")
OTHER = CallSite("shop/views.py", 40, "author_list")
SQL = 'SELECT "shop_author"."id" FROM "shop_author" WHERE "shop_author"."id" = %s LIMIT 21'


def n1(
    count: int,
    total_ms: float,
    *,
    fp: str = "fp-author",
    site: CallSite | None = LOOP,
    relation: str | None = "shop.Book.author",
    suggestion: str | None = 'select_related("author")',
    first: int = 1,
) -> NPlusOneGroup:
    return NPlusOneGroup(
        fingerprint=fp,
        count=count,
        total_ms=total_ms,
        callsite=site,
        relation=relation,
        suggestion=suggestion,
        sample_sql=SQL,
        query_indexes=list(range(first, first + count)),
    )


def q(
    index: int, ms: float = 1.0, *, site: CallSite | None = LOOP, start: float = 0.0
) -> QueryRecord:
    return QueryRecord(
        index=index,
        alias="default",
        sql=SQL,
        params=[index],
        duration_ms=ms,
        fingerprint="fp-author",
        callsite=site,
        start_ms=start,
    )


def rec(
    request_id: str,
    minutes: int,
    *,
    path: str = "/books/",
    view: str = "shop.views.book_list",
    n_plus_one: list[NPlusOneGroup] | None = None,
    duplicates: list[DuplicateGroup] | None = None,
    queries: list[QueryRecord] | None = None,
    duration_ms: float = 50.0,
) -> RequestRecord:
    queries = queries or []
    return RequestRecord(
        id=request_id,
        method="GET",
        path=path,
        view=view,
        status=200,
        started_at=T0 + dt.timedelta(minutes=minutes),
        duration_ms=duration_ms,
        db_time_ms=sum(query.duration_ms for query in queries),
        query_count=len(queries),
        duplicate_count=sum(d.count - 1 for d in duplicates or []),
        queries=queries,
        duplicates=duplicates or [],
        n_plus_one=n_plus_one or [],
    )


def test_one_call_site_across_requests_is_one_hotspot_with_totals() -> None:
    report = build_report(
        [
            rec("r-old-111", 0, n_plus_one=[n1(10, 5.0)]),
            rec("r-worst-1", 1, path="/books/?page=2", n_plus_one=[n1(30, 12.0)]),
            rec("r-new-111", 2, n_plus_one=[n1(20, 4.0)]),
        ]
    )
    [spot] = report.n_plus_one
    assert spot.occurrences == 60
    assert spot.requests == 3
    assert spot.total_ms == 21.0
    assert spot.avg_ms == pytest.approx(21.0 / 60)
    # One query's worth per request stays: 5 - 0.5, 12 - 0.4, 4 - 0.2.
    assert spot.saved_ms == pytest.approx(4.5 + 11.6 + 3.8)
    assert spot.relation == "shop.Book.author"
    assert spot.suggestion == 'select_related("author")'
    assert spot.views == [("shop.views.book_list", 3)]
    assert spot.paths == [("/books/", 2), ("/books/?page=2", 1)]
    assert spot.newest is not None
    assert spot.newest.id == "r-new-111"
    assert spot.worst is not None
    assert spot.worst.id == "r-worst-1"
    assert spot.worst.count == 30
    assert report.request_count == 3
    assert (report.oldest, report.newest) == (T0, T0 + dt.timedelta(minutes=2))


def test_same_sql_from_two_call_sites_is_two_hotspots() -> None:
    report = build_report(
        [rec("r1-aaaaaa", 0, n_plus_one=[n1(3, 3.0), n1(5, 5.0, site=OTHER, first=10)])]
    )
    assert [spot.callsite for spot in report.n_plus_one] == [OTHER, LOOP]


def test_hotspots_are_ranked_by_time_a_fix_saves_not_by_count() -> None:
    many_cheap = n1(100, 1.0, fp="cheap", relation="shop.Book.tags", site=OTHER)
    few_slow = n1(3, 30.0, fp="slow")
    report = build_report([rec("r1-aaaaaa", 0, n_plus_one=[many_cheap, few_slow])])
    assert [spot.fingerprint for spot in report.n_plus_one] == ["slow", "cheap"]
    assert report.n_plus_one[0].saved_ms == 20.0
    assert report.n_plus_one[1].saved_ms == pytest.approx(0.99)
    assert report.saved_ms == pytest.approx(20.99)


def test_relation_and_suggestion_are_the_most_common_ones() -> None:
    report = build_report(
        [
            rec("r1-aaaaaa", 0, n_plus_one=[n1(2, 1.0, suggestion=None, relation=None)]),
            rec("r2-aaaaaa", 1, n_plus_one=[n1(2, 1.0)]),
            rec("r3-aaaaaa", 2, n_plus_one=[n1(2, 1.0)]),
        ]
    )
    [spot] = report.n_plus_one
    assert spot.relation == "shop.Book.author"
    assert spot.suggestion == 'select_related("author")'


def test_duplicates_outside_n_plus_one_are_hotspots_with_their_time() -> None:
    queries = [q(0, 2.0, site=OTHER), q(1, 3.0, site=LOOP), q(2, 1.0, site=OTHER)]
    dup = DuplicateGroup(fingerprint="fp-author", count=2, sql=SQL, query_indexes=[0, 2])
    report = build_report([rec("r1-aaaaaa", 0, queries=queries, duplicates=[dup])])
    [spot] = report.duplicates
    assert spot.kind == "duplicate"
    assert spot.callsite == OTHER  # where the first of them ran
    assert spot.occurrences == 2
    assert spot.total_ms == 3.0
    assert spot.saved_ms == 1.5
    assert report.n_plus_one == []


def test_duplicates_inside_an_n_plus_one_are_not_counted_twice() -> None:
    queries = [q(i) for i in range(4)]
    dup = DuplicateGroup(fingerprint="fp-author", count=2, sql=SQL, query_indexes=[1, 3])
    record = rec("r1-aaaaaa", 0, queries=queries, duplicates=[dup], n_plus_one=[n1(3, 3.0)])
    report = build_report([record])
    assert report.duplicates == []
    assert [spot.kind for spot in report.ranking] == ["n_plus_one"]
    assert record.duplicates_in_n_plus_one() == {1: 1}


def test_a_duplicate_partly_inside_an_n_plus_one_counts_only_its_own_queries() -> None:
    # Queries 1-3: the N+1 from the loop. Query 0 (same SQL, same params as
    # query 1) and query 5 (same as query 2) ran elsewhere: those two are
    # duplicates of their own; the loop's queries are counted in the N+1.
    queries = [
        q(0, 2.0, site=OTHER),
        *[q(i, 1.0) for i in range(1, 4)],
        q(4),
        q(5, 4.0, site=OTHER),
    ]
    twice = DuplicateGroup(fingerprint="fp-author", count=2, sql=SQL, query_indexes=[0, 1])
    thrice = DuplicateGroup(fingerprint="fp-author", count=3, sql=SQL, query_indexes=[0, 2, 5])
    record = rec(
        "r1-aaaaaa", 0, queries=queries, duplicates=[twice, thrice], n_plus_one=[n1(3, 3.0)]
    )
    report = build_report([record])
    # "twice" keeps one query outside the N+1: nothing left to cache.
    [spot] = report.duplicates
    assert (spot.occurrences, spot.total_ms) == (2, 6.0)  # queries 0 and 5 only
    [loop] = report.n_plus_one
    assert loop.total_ms == 3.0
    # Each query's time once across the rankings.
    assert spot.total_ms + loop.total_ms == sum(
        query.duration_ms for query in queries if query.index != 4
    )


def test_project_hotspots_rank_before_those_inside_packages() -> None:
    inside = dataclasses.replace(n1(9, 90.0, fp="fp-cms", site=None), package="wagtail")
    own = n1(2, 4.0)
    report = build_report([rec("r1-aaaaaa", 0, n_plus_one=[inside, own])])
    assert [spot.fingerprint for spot in report.ranking] == ["fp-author", "fp-cms"]
    assert [spot.fingerprint for spot in report.project_n_plus_one] == ["fp-author"]
    [package] = report.package_n_plus_one
    assert package.package == "wagtail"
    assert report.to_dict()["n_plus_one"][0]["package"] == "wagtail"  # ranked by time in JSON


def test_repeated_transaction_statements_are_not_hotspots() -> None:
    begins = [dataclasses.replace(q(i, 1.0), sql="BEGIN") for i in range(2)]
    dup = DuplicateGroup(fingerprint="fp-begin", count=2, sql="BEGIN", query_indexes=[0, 1])
    report = build_report([rec("r1-aaaaaa", 0, queries=begins, duplicates=[dup])])
    assert report.duplicates == []


def test_ranking_mixes_kinds_and_chart_bars_follow_it() -> None:
    queries = [q(0, 40.0, site=OTHER), q(1, 40.0, site=OTHER)]
    dup = DuplicateGroup(fingerprint="fp-x", count=2, sql="SELECT 1", query_indexes=[0, 1])
    report = build_report(
        [rec("r1-aaaaaa", 0, queries=queries, duplicates=[dup], n_plus_one=[n1(2, 20.0, first=5)])]
    )
    assert [(s.kind, s.saved_ms) for s in report.ranking] == [
        ("duplicate", 40.0),
        ("n_plus_one", 10.0),
    ]
    chart = ranking_chart(report.ranking)
    assert [bar.width for bar in chart.bars] == [RANKING_BAR_WIDTH, RANKING_BAR_WIDTH / 4]
    assert [bar.rank for bar in chart.bars] == [1, 2]
    assert chart.height == 2 * (chart.bars[1].y - chart.bars[0].y)


def test_ranking_chart_shows_at_most_ten() -> None:
    groups = [n1(2, float(i + 1), fp=f"fp{i}") for i in range(12)]
    report = build_report([rec("r1-aaaaaa", 0, n_plus_one=groups)])
    chart = ranking_chart(report.ranking)
    assert len(chart.bars) == 10
    assert chart.bars[0].hotspot.fingerprint == "fp11"


def test_empty_buffer_gives_an_empty_report() -> None:
    report = build_report([])
    assert (report.request_count, report.n_plus_one, report.duplicates) == (0, [], [])
    assert report.oldest is None
    assert ranking_chart(report.ranking).bars == []


def test_links_point_to_the_page_holding_the_first_query() -> None:
    report = build_report([rec("r1-aaaaaa", 0, n_plus_one=[n1(5, 1.0, first=250)])])
    assert report.n_plus_one[0].worst is not None
    assert report.n_plus_one[0].worst.anchor == "?page=3#q-250"


def test_label_falls_back_from_relation_to_call_site_to_sql() -> None:
    report = build_report(
        [
            rec(
                "r1-aaaaaa",
                0,
                n_plus_one=[
                    n1(2, 4.0, fp="a"),
                    n1(2, 3.0, fp="a2", site=None),
                    n1(2, 2.0, fp="b", relation=None),
                    n1(2, 1.0, fp="c", relation=None, site=None),
                ],
            )
        ]
    )
    labels = [spot.label for spot in report.n_plus_one]
    assert labels == [
        "shop.Book.author at shop/views.py:17",
        "shop.Book.author",
        "book_list (shop/views.py:17)",
        SQL[:60],
    ]


def test_filter_records_by_path_any_case_and_by_n_plus_one() -> None:
    records = [
        rec("r1-aaaaaa", 0, path="/Books/", n_plus_one=[n1(2, 1.0)]),
        rec("r2-aaaaaa", 1, path="/books/fixed/"),
        rec("r3-aaaaaa", 2, path="/authors/", n_plus_one=[n1(2, 1.0)]),
    ]
    assert [r.id for r in filter_records(records, path="books")] == ["r1-aaaaaa", "r2-aaaaaa"]
    assert [r.id for r in filter_records(records, n_plus_one=True)] == ["r1-aaaaaa", "r3-aaaaaa"]
    assert [r.id for r in filter_records(records, path=" BOOKS ", n_plus_one=True)] == ["r1-aaaaaa"]
    assert len(filter_records(records)) == 3


def test_query_roles_mark_n_plus_one_and_duplicates() -> None:
    queries = [q(i) for i in range(5)]
    dup = DuplicateGroup(fingerprint="fp", count=2, sql=SQL, query_indexes=[0, 4])
    roles = query_roles(
        rec("r1-aaaaaa", 0, queries=queries, duplicates=[dup], n_plus_one=[n1(2, 1.0)])
    )
    assert {i: (r.n_plus_one, r.duplicate, r.css) for i, r in roles.items()} == {
        0: (None, 1, "ql-dup"),
        1: (1, None, "ql-n1"),
        2: (1, None, "ql-n1"),
        4: (None, 1, "ql-dup"),
    }


def test_waterfall_places_queries_on_the_request_time_axis() -> None:
    queries = [q(0, 10.0, start=0.0), q(1, 25.0, start=50.0), q(2, 0.001, start=99.0)]
    record = rec("r1-aaaaaa", 0, queries=queries, n_plus_one=[n1(2, 1.0)], duration_ms=100.0)
    picture = waterfall(record, queries, query_roles(record), width=1000)
    assert [(bar.x, bar.width) for bar in picture.bars] == [
        (0.0, 100.0),
        (500.0, 250.0),
        (990.0, 3.0),
    ]
    assert [bar.css for bar in picture.bars] == ["ql-plain", "ql-n1", "ql-n1"]
    assert picture.bars[0].y < picture.bars[1].y < picture.bars[2].y
    assert picture.ticks[-1] == (1000.0, "100.0 ms")
    assert picture.height > picture.bars[-1].y


def test_waterfall_axis_stretches_to_a_query_ending_after_the_request() -> None:
    queries = [q(0, 40.0, start=80.0)]
    picture = waterfall(rec("r1-aaaaaa", 0, queries=queries, duration_ms=100.0), queries, {})
    assert picture.total_ms == 120.0


@pytest.mark.django_db
def test_real_requests_aggregate_into_the_fk_loop_hotspot(client) -> None:
    from tests.factories import make_library

    get_storage().clear()
    make_library(authors=3, books_per_author=2)
    for _ in range(3):
        client.get("/fk_loop/")
    client.get("/fk_loop_fixed/")
    report = build_report(get_storage().recent())
    [spot] = report.n_plus_one
    assert spot.relation == "tests.Book.author"
    assert spot.suggestion == 'select_related("author")'
    assert spot.callsite == CallSite("tests/views.py", line_of("fk_loop"), "fk_loop")
    assert (spot.requests, spot.occurrences) == (3, 18)
    assert spot.views == [("tests.views.fk_loop", 3)]
    get_storage().clear()


def test_slow_queries_rank_every_shape_by_total_time_with_its_slowest_run() -> None:
    import dataclasses

    from tests.test_cache_storage import make_record

    fast = make_record(1)
    slow = make_record(2)
    # Same shapes in both requests; the second ran its first query slowly.
    slow.queries = [
        dataclasses.replace(
            query, duration_ms=query.duration_ms + (40.0 if query.index == 0 else 0)
        )
        for query in slow.queries
    ]
    report = build_report([fast, slow])
    top = report.slow[0]
    assert top.kind == "slow"
    assert top.fingerprint == slow.queries[0].fingerprint
    assert top.requests == 2
    assert top.max_ms == slow.queries[0].duration_ms
    assert top.worst is not None
    assert (top.worst.id, top.worst.first_index) == (slow.id, 0)
    assert [spot.total_ms for spot in report.slow] == sorted(
        (spot.total_ms for spot in report.slow), reverse=True
    )
    exported = report.to_dict()["slow"][0]
    assert exported["worst"] == {"request_id": slow.id, "query_index": 0, "total_ms": top.max_ms}
    assert exported["mean_ms"] == round(top.total_ms / top.occurrences, 3)


@pytest.mark.django_db
def test_the_hotspots_of_a_buffer_leave_its_records_compact(client) -> None:
    """Aggregating reads the analysis's columns: no record builds (and keeps) its queries.

    The report is the one the built query records give.
    """
    from tests.factories import make_library

    get_storage().clear()
    make_library(authors=3, books_per_author=2)
    for url in ("/fk_loop/", "/duplicates/", "/fk_loop/", "/count_loop/"):
        client.get(url)
    records = get_storage().recent()
    report = build_report(records)
    assert all("_queries" not in record.__dict__ for record in records), "queries were built"
    assert all("_duplicates" not in record.__dict__ for record in records), "groups were kept"
    assert report.n_plus_one
    assert report.duplicates
    assert report.slow
    # The same records with their queries built (as a shared storage reads them back).
    copies = [RequestRecord.from_dict(record.to_dict()) for record in records]
    assert build_report(copies).to_dict() == report.to_dict()
    get_storage().clear()
