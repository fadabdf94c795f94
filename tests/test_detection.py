"""N+1 and duplicate detection, end to end through the middleware."""

from __future__ import annotations

import pytest
from django.test import Client

from querylens.records import RequestRecord
from querylens.testing import recorded
from tests.helpers import VIEWS_FILE, line_of, record_of
from tests.models import Author

pytestmark = pytest.mark.usefixtures("library", "headers_always")


@pytest.fixture
def headers_always(settings: object) -> None:
    settings.QUERYLENS = {"HEADERS": "always"}  # type: ignore[attr-defined]


def fetch(client: Client, name: str) -> RequestRecord:
    response = client.get(f"/{name}/")
    assert response.status_code == 200
    record = record_of(response)
    assert response["X-QueryLens-Queries"] == str(record.query_count)
    assert response["X-QueryLens-NPlusOne"] == str(len(record.n_plus_one))
    return record


def only_group(record: RequestRecord):  # type: ignore[no-untyped-def]
    assert len(record.n_plus_one) == 1, [g.to_dict() for g in record.n_plus_one]
    return record.n_plus_one[0]


@pytest.mark.parametrize(
    ("view", "marker", "count", "relation", "suggestion"),
    [
        ("fk_loop", "fk_loop", 6, "tests.Book.author", 'select_related("author")'),
        ("reverse_fk", "reverse_fk", 3, "tests.Author.books", 'prefetch_related("books")'),
        ("m2m", "m2m", 6, "tests.Book.tags", 'prefetch_related("tags")'),
        ("reverse_m2m", "reverse_m2m", 3, "tests.Tag.books", 'prefetch_related("books")'),
        (
            "reverse_one_to_one",
            "reverse_o2o",
            3,
            "tests.Author.profile",
            'select_related("profile")',
        ),
        (
            "generic_fk",
            "generic_fk",
            6,
            "tests.Comment.content_object",
            'prefetch_related("content_object")',
        ),
        (
            "generic_relation",
            "generic_rel",
            6,
            "tests.Book.comments",
            'prefetch_related("comments")',
        ),
        ("count_loop", "count_loop", 3, "tests.Author.books", 'annotate(n=Count("books"))'),
        ("get_loop", "get_loop", 6, None, "in_bulk(ids)"),
        ("raw_loop", "raw_loop", 6, None, "filter(pk__in=ids)"),
    ],
)
def test_each_n_plus_one_kind_is_one_group_with_its_fix(
    client: Client, view: str, marker: str, count: int, relation: str | None, suggestion: str
) -> None:
    group = only_group(fetch(client, view))
    assert group.count == count
    assert group.relation == relation
    assert group.suggestion == suggestion
    assert group.callsite is not None
    assert (group.callsite.file, group.callsite.line) == (VIEWS_FILE, line_of(marker))
    assert group.callsite.function == view


@pytest.mark.parametrize(
    "view",
    [
        "fk_loop_fixed",
        "reverse_fk_fixed",
        "reverse_fk_prefetch_object",
        "m2m_fixed",
        "reverse_one_to_one_fixed",
        "nested_fixed",
        "get_loop_fixed",
        "count_loop_fixed",
        "template_fk_fixed",
        "single_lazy_access",
        "savepoints",
        "no_queries",
    ],
)
def test_clean_twins_have_no_n_plus_one(client: Client, view: str) -> None:
    record = fetch(client, view)
    assert record.n_plus_one == []


def test_fixed_twin_runs_fewer_queries(client: Client) -> None:
    assert fetch(client, "fk_loop").query_count == 7
    assert fetch(client, "fk_loop_fixed").query_count == 1


def test_nested_loop_suggests_the_nested_prefetch(client: Client) -> None:
    record = fetch(client, "nested")
    by_relation = {group.relation: group for group in record.n_plus_one}
    assert set(by_relation) == {"tests.Author.books", "tests.Book.publisher"}
    assert by_relation["tests.Author.books"].suggestion == 'prefetch_related("books")'
    inner = by_relation["tests.Book.publisher"]
    assert inner.suggestion == 'prefetch_related("books__publisher")'
    assert inner.callsite is not None
    assert inner.callsite.line == line_of("nested_inner")


def test_loop_over_prefetched_children_suggests_the_nested_prefetch(client: Client) -> None:
    group = only_group(fetch(client, "nested_after_prefetch"))
    assert group.relation == "tests.Book.publisher"
    assert group.suggestion == 'prefetch_related("books__publisher")'


def test_chained_forward_keys_suggest_a_deeper_select_related(client: Client) -> None:
    record = fetch(client, "chained_forward")
    suggestions = {group.relation: group.suggestion for group in record.n_plus_one}
    assert suggestions == {
        "tests.Book.author": 'select_related("author")',
        "tests.Author.publisher": 'select_related("author__publisher")',
    }


def test_template_n_plus_one_points_at_the_template_line(client: Client) -> None:
    group = only_group(fetch(client, "template_fk"))
    assert group.callsite is not None
    assert group.callsite.file == "tests/books.html"
    assert group.callsite.line == 3
    assert group.callsite.is_template
    assert group.relation == "tests.Book.author"
    assert group.suggestion == 'select_related("author")'


def test_a_template_loop_names_the_query_that_loaded_its_objects(client: Client) -> None:
    from tests.helpers import querylens_staff

    record = fetch(client, "template_fk")
    group = only_group(record)
    # The books came from the query the template's {% for %} ran (line 2);
    # that is the queryset the fix goes on.
    assert group.source_query == 0
    source = record.queries[0]
    assert "tests_book" in source.sql
    assert (source.callsite.file, source.callsite.line) == ("tests/books.html", 2)
    staff = Client()
    staff.force_login(querylens_staff("staff"))
    page = staff.get(f"/admin/querylens/requests/{record.id}/").content.decode()
    shown = page[page.index("Objects loaded by") :][:400]
    assert '<a href="?page=1#q-0">query #0</a>' in shown
    assert "tests/books.html:2" in shown


def test_a_view_loop_names_its_queryset_line_too(client: Client) -> None:
    record = fetch(client, "fk_loop")
    group = only_group(record)
    assert group.source_query == 0
    assert record.queries[0].callsite.file == VIEWS_FILE


def test_same_sql_from_different_lines_is_a_duplicate_not_an_n_plus_one(client: Client) -> None:
    record = fetch(client, "duplicates")
    assert record.n_plus_one == []
    assert record.duplicate_count == 1
    assert [group.count for group in record.duplicates] == [2]
    lines = [record.queries[i].callsite.line for i in record.duplicates[0].query_indexes]  # type: ignore[union-attr]
    assert lines == [line_of("dup_first"), line_of("dup_second")]


def test_duplicates_count_repeats_not_queries(client: Client) -> None:
    # Six books by three authors: each author is loaded twice, 3 repeats.
    record = fetch(client, "fk_loop")
    assert record.duplicate_count == 3
    assert sorted(group.count for group in record.duplicates) == [2, 2, 2]


def test_query_records_carry_sql_params_alias_and_timing(client: Client) -> None:
    record = fetch(client, "get_loop")
    query = record.queries[1]
    assert query.alias == "default"
    assert "tests_book" in query.sql
    assert len(query.params) == 1
    assert query.duration_ms >= 0
    assert len(query.fingerprint) == 16
    starts = [q.start_ms for q in record.queries]
    assert starts == sorted(starts)
    assert record.db_time_ms == pytest.approx(sum(q.duration_ms for q in record.queries), abs=0.05)


def test_executemany_is_one_recorded_query(client: Client) -> None:
    record = fetch(client, "executemany")
    (query,) = record.queries
    assert query.many is True
    assert query.params == [["x", 1], ["y", 2]]
    assert query.callsite is not None
    assert query.callsite.line == line_of("executemany")


def test_a_failing_query_is_recorded_with_its_error(client: Client) -> None:
    response = client.get("/failing_query/")
    assert response.content == b"OperationalError" or response.content == b"ProgrammingError"
    record = record_of(response)
    failing = [q for q in record.queries if "no_such_table" in q.sql]
    assert len(failing) == 1
    assert failing[0].error is not None
    assert "no_such_table" in failing[0].error


def test_threshold_setting_raises_the_bar(client: Client, settings: object) -> None:
    settings.QUERYLENS = {"HEADERS": "always", "N_PLUS_ONE_THRESHOLD": 4}  # type: ignore[attr-defined]
    assert fetch(client, "reverse_fk").n_plus_one == []  # 3 repeats
    assert len(fetch(client, "fk_loop").n_plus_one) == 1  # 6 repeats


def test_queries_over_the_cap_are_counted_not_stored(client: Client, settings: object) -> None:
    settings.QUERYLENS = {"HEADERS": "always", "MAX_QUERIES_PER_REQUEST": 3}  # type: ignore[attr-defined]
    response = client.get("/fk_loop/")
    record = record_of(response)
    assert response["X-QueryLens-Queries"] == "7"
    assert record.query_count == 7
    assert len(record.queries) == 3
    assert record.truncated == 4


def test_a_request_inside_a_recorded_block_keeps_its_own_cap(
    client: Client, settings: object
) -> None:
    """The request's part of a larger recording is cut at the request's cap, not the block's."""
    from querylens.testing import recorded

    with recorded() as outer:
        settings.QUERYLENS = {"HEADERS": "always", "MAX_QUERIES_PER_REQUEST": 3}  # type: ignore[attr-defined]
        record = record_of(client.get("/fk_loop/"))
    assert (record.query_count, len(record.queries), record.truncated) == (7, 3, 4)
    assert outer.record.query_count >= 7


def test_params_are_not_kept_when_record_params_is_off(client: Client, settings: object) -> None:
    settings.QUERYLENS = {"HEADERS": "always", "RECORD_PARAMS": False}  # type: ignore[attr-defined]
    record = fetch(client, "fk_loop")
    assert all(query.params is None for query in record.queries)
    # Duplicates still need the params: they are compared in memory, never stored.
    assert record.duplicate_count == 3


@pytest.mark.django_db(transaction=True)
async def test_async_view_call_site_is_the_await_line(async_client: object) -> None:
    response = await async_client.get("/async_get_loop/")  # type: ignore[attr-defined]
    assert response.status_code == 200
    group = only_group(record_of(response))
    assert group.count == 6
    assert group.suggestion == "in_bulk(ids)"
    assert group.callsite is not None
    assert (group.callsite.file, group.callsite.line) == (VIEWS_FILE, line_of("async_get"))
    assert group.callsite.function == "async_get_loop"


def test_async_view_under_the_sync_client_reports_the_await_line(client: Client) -> None:
    group = only_group(fetch(client, "async_get_loop"))
    assert group.callsite is not None
    assert (group.callsite.file, group.callsite.line) == (VIEWS_FILE, line_of("async_get"))


@pytest.mark.django_db(transaction=True)
async def test_async_clean_twin_has_no_n_plus_one(async_client: object) -> None:
    response = await async_client.get("/async_fixed/")  # type: ignore[attr-defined]
    record = record_of(response)
    # A fresh connection may run session set-up (MariaDB's SET ...) first.
    assert len([q for q in record.queries if "tests_book" in q.sql]) == 1
    assert record.n_plus_one == []


def test_one_helper_called_from_two_lines_is_two_groups(client: Client) -> None:
    record = fetch(client, "two_callers")
    assert [group.count for group in record.n_plus_one] == [3, 3]
    for group, caller in zip(record.n_plus_one, ("caller_one", "caller_two"), strict=True):
        assert group.callsite is not None
        assert group.callsite.line == line_of("helper")
        stack = record.queries[group.query_indexes[-1]].stack
        assert (stack[1].file, stack[1].line) == (VIEWS_FILE, line_of(caller))
        assert stack[1].function == "two_callers"


@pytest.mark.usefixtures("library")
def test_a_chunked_prefetch_iterator_is_batch_loading_not_an_n_plus_one() -> None:
    with recorded() as result:
        counts = [
            len(author.books.all())
            for author in Author.objects.prefetch_related("books").iterator(chunk_size=1)
        ]
    assert counts == [2, 2, 2]
    record = result.record
    # One query for the authors, one IN (...) prefetch per chunk of one.
    assert record.query_count == 4
    assert record.n_plus_one == []


@pytest.mark.usefixtures("library")
def test_an_n_plus_one_inside_a_chunked_prefetch_loop_is_still_found() -> None:
    with recorded() as result:
        for author in Author.objects.prefetch_related("books").iterator(chunk_size=2):
            for book in author.books.all():
                book.publisher.name  # noqa: B018  (not prefetched: a lazy load per book)
    (group,) = result.record.n_plus_one
    assert group.relation == "tests.Book.publisher"
    assert group.suggestion == 'prefetch_related("books__publisher")'
    # The fix, pasted: batch loads per chunk, no N+1, fewer queries.
    with recorded() as fixed:
        for author in Author.objects.prefetch_related("books__publisher").iterator(chunk_size=2):
            for book in author.books.all():
                book.publisher.name  # noqa: B018
    assert fixed.record.n_plus_one == []
    assert fixed.record.query_count < result.record.query_count
