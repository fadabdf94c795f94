"""Each N+1 kind's fix, pasted where querylens says, removes the repetition.

Every test here runs a realistic loop, asserts the verdict (relation, call
site, suggestion) and then applies the suggestion *as text* to the queryset
that loaded the parents (``paste``), counting the queries before and after.
The placeholders a suggestion leaves for the user (``title__startswith=...``)
are filled the way a user would.
"""

from __future__ import annotations

import pickle
import re
import sys
from typing import Any

import pytest
from django.db.models import Avg, Count, Max, Min, Prefetch, QuerySet, Sum
from django.utils import timezone

from querylens.fixes import AGGREGATE_NOTE, REFINED_NOTE, SAME_QUERY_NOTE
from querylens.testing import recorded
from tests.helpers import line_of
from tests.models import Author, Book, Order, Profile, Publisher

pytestmark = pytest.mark.usefixtures("library")

HERE = sys.modules[__name__]
THIS_FILE = "tests/test_fixes.py"


def paste(queryset: QuerySet[Any], suggestion: str, **placeholders: Any) -> QuerySet[Any]:
    """``queryset.<suggestion>``, the suggestion's ``name=...`` filled from ``placeholders``."""
    for name, value in placeholders.items():
        assert f"{name}=..." in suggestion, suggestion
        suggestion = suggestion.replace(f"{name}=...", f"{name}={value!r}")
    assert "..." not in suggestion, f"unfilled placeholder in {suggestion}"
    names = {
        "Avg": Avg,
        "Count": Count,
        "Max": Max,
        "Min": Min,
        "Prefetch": Prefetch,
        "Sum": Sum,
        "Book": Book,
    }
    return eval(f"queryset.{suggestion}", names, {"queryset": queryset})  # type: ignore[no-any-return]


def only_group(result: Any) -> Any:
    groups = result.record.n_plus_one
    assert len(groups) == 1, [group.to_dict() for group in groups]
    return groups[0]


def at(group: Any, marker: str) -> None:
    assert group.callsite is not None
    assert (group.callsite.file, group.callsite.line) == (THIS_FILE, line_of(marker, HERE))


@pytest.fixture
def orders(library: list[Book]) -> None:
    now = timezone.now()
    for number, author in enumerate(Author.objects.order_by("pk")):
        for total in (10, 20 + number):
            Order.objects.create(status="paid", created_at=now, total=total, author=author)


# -- aggregates per row -----------------------------------------------------------


@pytest.mark.usefixtures("orders")
def test_an_aggregate_per_row_gets_an_annotation_on_the_parents() -> None:
    with recorded() as result:
        totals = {
            author.pk: author.orders.aggregate(Sum("total"))["total__sum"]  # line: sum per row
            for author in Author.objects.order_by("pk")
        }
    group = only_group(result)
    assert group.relation == "tests.Author.orders"
    assert group.suggestion == 'annotate(total__sum=Sum("orders__total"))'
    assert group.note == AGGREGATE_NOTE
    at(group, "sum per row")

    with recorded() as fixed:
        pasted = {
            a.pk: a.total__sum for a in paste(Author.objects.order_by("pk"), group.suggestion)
        }
    assert pasted == totals
    assert fixed.record.query_count == 1 < result.record.query_count == 4


@pytest.mark.usefixtures("orders")
def test_several_aggregates_with_their_own_names_keep_them() -> None:
    with recorded() as result:
        stats = [
            author.orders.aggregate(mean=Avg("total"), top=Max("total"), low=Min("total"))
            for author in Author.objects.order_by("pk")
        ]
    group = only_group(result)
    assert group.suggestion == (
        'annotate(mean=Avg("orders__total"), top=Max("orders__total"), low=Min("orders__total"))'
    )
    with recorded() as fixed:
        pasted = [
            {"mean": a.mean, "top": a.top, "low": a.low}
            for a in paste(Author.objects.order_by("pk"), group.suggestion)
        ]
    assert [{k: float(v) for k, v in s.items()} for s in pasted] == [
        {k: float(v) for k, v in s.items()} for s in stats
    ]
    assert fixed.record.query_count == 1


# -- a prefetch defeated per object -----------------------------------------------


def test_a_filter_on_a_prefetched_relation_gets_a_prefetch_object_not_the_same_prefetch() -> None:
    with recorded() as result:
        firsts = [
            [book.title for book in author.books.filter(title__endswith=".0")]  # line: filtered
            for author in Author.objects.order_by("pk").prefetch_related("books")
        ]
    group = only_group(result)
    assert group.relation == "tests.Author.books"
    assert group.suggestion == (
        'prefetch_related(Prefetch("books", queryset=Book.objects.filter(title__endswith=...), '
        'to_attr="filtered_books"))'
    )
    assert group.note == REFINED_NOTE.format(attribute="books", to_attr="filtered_books")
    at(group, "filtered")

    fixed_queryset = paste(
        Author.objects.order_by("pk").prefetch_related("books"),
        group.suggestion,
        title__endswith=".0",
    )
    with recorded() as fixed:
        pasted = [[book.title for book in author.filtered_books] for author in fixed_queryset]
    assert pasted == firsts
    assert fixed.record.query_count == 3 < result.record.query_count == 5


def test_first_per_parent_after_a_prefetch_gets_a_sliced_prefetch() -> None:
    with recorded() as result:
        latest = [
            author.books.order_by("-id").first()  # line: latest
            for author in Author.objects.order_by("pk").prefetch_related("books")
        ]
    group = only_group(result)
    assert group.relation == "tests.Author.books"
    assert group.suggestion == (
        'prefetch_related(Prefetch("books", queryset=Book.objects.order_by("-id")[:1], '
        'to_attr="first_books"))'
    )
    at(group, "latest")
    with recorded() as fixed:
        pasted = [
            author.first_books[0]
            for author in paste(Author.objects.order_by("pk"), group.suggestion)
        ]
    assert pasted == latest
    assert fixed.record.query_count == 2 < result.record.query_count


def test_a_model_method_refining_its_relation_is_named_with_the_loop_fix() -> None:
    def latest_book(author: Author) -> Book | None:
        return author.books.order_by("-title").first()  # line: model method

    with recorded() as result:
        titles = [latest_book(author).title for author in Author.objects.order_by("pk")]  # type: ignore[union-attr]
    group = only_group(result)
    at(group, "model method")
    assert group.suggestion == (
        'prefetch_related(Prefetch("books", queryset=Book.objects.order_by("-title")[:1], '
        'to_attr="first_books"))'
    )
    with recorded() as fixed:
        pasted = [
            a.first_books[0].title for a in paste(Author.objects.order_by("pk"), group.suggestion)
        ]
    assert pasted == titles
    assert fixed.record.query_count == 2


def test_select_related_per_object_on_a_relation_gets_it_inside_the_prefetch() -> None:
    with recorded() as result:
        names = [
            [book.publisher.name for book in author.books.select_related("publisher")]
            for author in Author.objects.order_by("pk")
        ]
    group = only_group(result)
    assert group.relation == "tests.Author.books"
    assert group.suggestion == (
        'prefetch_related(Prefetch("books", queryset=Book.objects.select_related("publisher"), '
        'to_attr="books_list"))'
    )
    with recorded() as fixed:
        pasted = [
            [book.publisher.name for book in author.books_list]
            for author in paste(Author.objects.order_by("pk"), group.suggestion)
        ]
    assert pasted == names
    assert fixed.record.query_count == 2 < result.record.query_count == 4


def test_values_list_per_object_gets_a_prefetch_and_says_to_read_the_objects() -> None:
    with recorded() as result:
        titles = [
            sorted(author.books.values_list("title", flat=True))
            for author in Author.objects.order_by("pk").prefetch_related("books")
        ]
    group = only_group(result)
    assert group.suggestion == (
        'prefetch_related(Prefetch("books", queryset=Book.objects.all(), to_attr="books_list"))'
    )
    assert group.note is not None
    assert "values_list() cannot be prefetched" in group.note
    with recorded() as fixed:
        pasted = [
            sorted(book.title for book in author.books_list)
            for author in paste(Author.objects.order_by("pk"), group.suggestion)
        ]
    assert pasted == titles
    assert fixed.record.query_count == 2


def test_a_prefetch_object_refined_per_object_keeps_its_relation() -> None:
    queryset = Author.objects.order_by("pk").prefetch_related(
        Prefetch("books", queryset=Book.objects.order_by("title"))
    )
    with recorded() as result:
        for author in queryset:
            list(author.books.filter(title__startswith="Book"))
    group = only_group(result)
    assert group.relation == "tests.Author.books"
    assert group.suggestion is not None
    assert "queryset=Book.objects.filter(title__startswith=...)" in group.suggestion


def test_a_filtered_relation_without_any_prefetch_is_not_told_to_prefetch_it() -> None:
    with recorded() as result:
        for author in Author.objects.order_by("pk"):
            list(author.books.filter(title__endswith=".1"))
    group = only_group(result)
    assert group.suggestion is not None
    assert group.suggestion != 'prefetch_related("books")'
    assert group.suggestion.startswith('prefetch_related(Prefetch("books", ')


def test_exists_per_object_is_served_by_a_plain_prefetch() -> None:
    with recorded() as result:
        flags = [author.books.exists() for author in Author.objects.order_by("pk")]
    group = only_group(result)
    assert group.suggestion == 'prefetch_related("books")'
    with recorded() as fixed:
        pasted = [a.books.exists() for a in paste(Author.objects.order_by("pk"), group.suggestion)]
    assert pasted == flags
    assert fixed.record.query_count == 2


def test_a_clean_prefetched_loop_is_still_clean() -> None:
    with recorded() as result:
        for author in Author.objects.order_by("pk").prefetch_related("books"):
            for book in author.books.all():
                book.title  # noqa: B018
            author.books.count()
            author.books.exists()
    assert result.record.n_plus_one == []
    assert result.record.query_count == 2


# -- select_related one level short -----------------------------------------------


def test_a_lazy_load_from_a_joined_object_names_the_whole_path() -> None:
    with recorded() as result:
        bios = [
            book.author.profile.bio  # line: one level short
            for book in Book.objects.select_related("author")
        ]
    group = only_group(result)
    assert group.relation == "tests.Author.profile"
    assert group.suggestion == 'select_related("author__profile")'
    at(group, "one level short")
    with recorded() as fixed:
        pasted = [
            b.author.profile.bio
            for b in paste(Book.objects.select_related("author"), group.suggestion)
        ]
    assert pasted == bios
    assert fixed.record.query_count == 1 < result.record.query_count


def test_two_levels_of_joins_then_a_lazy_load() -> None:
    Profile.objects.update(bio="x")
    with recorded() as result:
        names = [
            profile.author.publisher.name for profile in Profile.objects.select_related("author")
        ]
    group = only_group(result)
    assert group.suggestion == 'select_related("author__publisher")'
    with recorded() as fixed:
        pasted = [
            p.author.publisher.name
            for p in paste(Profile.objects.select_related("author"), group.suggestion)
        ]
    assert pasted == names
    assert fixed.record.query_count == 1


# -- the same query again ---------------------------------------------------------


def test_the_same_query_again_in_a_loop_says_evaluate_once_not_load_by_ids() -> None:
    with recorded() as result:
        for book in Book.objects.order_by("pk"):
            choices = list(Publisher.objects.order_by("name"))  # line: same query
            assert book.publisher_id in {p.pk for p in choices}
    group = only_group(result)
    at(group, "same query")
    assert group.relation is None
    assert group.suggestion is None
    assert group.note == SAME_QUERY_NOTE
    with recorded() as fixed:
        choices = list(Publisher.objects.order_by("name"))
        for book in Book.objects.order_by("pk"):
            assert book.publisher_id in {p.pk for p in choices}
    assert fixed.record.n_plus_one == []
    assert fixed.record.query_count == 2 < result.record.query_count


def test_one_query_per_object_by_its_own_id_still_gets_in_bulk() -> None:
    with recorded() as result:
        for book in Book.objects.order_by("pk"):
            Publisher.objects.get(pk=book.publisher_id)
    group = only_group(result)
    assert group.suggestion == "in_bulk(ids)"
    assert group.note is None


def test_bulk_fixes_say_what_they_skip() -> None:
    with recorded() as result:
        for book in Book.objects.order_by("pk"):
            book.title = book.title.upper()
            book.save(update_fields=["title"])
    group = only_group(result)
    assert group.suggestion == "bulk_update(objs, fields)"
    assert group.note is not None
    assert re.search(r"do not call save\(\).*signals", group.note)


# -- deferred fields --------------------------------------------------------------


def test_a_field_left_out_by_only_is_loaded_with_the_rows_when_pasted() -> None:
    with recorded() as result:
        books = Book.objects.order_by("pk").only("id", "title")
        keys = [book.author_id for book in books]  # line: only
    group = only_group(result)
    assert group.relation == "tests.Book.author"
    # Shortest paste-safe form: clear the only(), defer what stays unread.
    assert group.suggestion == 'defer(None).defer("publisher")'
    assert group.note is not None
    assert group.note.startswith("only() or defer() left author out of the query")
    at(group, "only")
    with recorded() as fixed:
        queryset = paste(Book.objects.order_by("pk").only("id", "title"), group.suggestion)
        pasted = [b.author_id for b in queryset]
    assert pasted == keys
    assert fixed.record.query_count == 1 < result.record.query_count == 7


def test_a_field_left_out_by_defer_is_loaded_again_when_pasted() -> None:
    with recorded() as result:
        titles = [book.title for book in Book.objects.order_by("pk").defer("title")]  # line: defer
    group = only_group(result)
    assert group.relation == "tests.Book.title"
    assert group.suggestion == "defer(None)"
    at(group, "defer")
    with recorded() as fixed:
        pasted = [
            b.title for b in paste(Book.objects.order_by("pk").defer("title"), group.suggestion)
        ]
    assert pasted == titles
    assert fixed.record.query_count == 1


def test_deferring_two_fields_and_reading_one_keeps_the_other_deferred() -> None:
    with recorded() as result:
        names = [a.name for a in Author.objects.order_by("pk").defer("name", "publisher")]
    group = only_group(result)
    # id loaded; name read; publisher still deferred. Appended to the
    # defer(), a bare only("id", "name") would subtract and load only id.
    assert group.suggestion == 'defer(None).defer("publisher")'
    with recorded() as fixed:
        queryset = paste(Author.objects.order_by("pk").defer("name", "publisher"), group.suggestion)
        pasted = [a.name for a in queryset]
    assert pasted == names
    assert fixed.record.query_count == 1


def test_a_deferred_field_of_a_joined_object_names_the_lookup() -> None:
    with recorded() as result:
        for book in Book.objects.select_related("author").only("title", "author__id"):
            book.author.name  # noqa: B018
    group = only_group(result)
    assert group.relation == "tests.Author.name"
    assert group.suggestion is None
    assert group.note is not None
    assert 'Add "author__name" to only()' in group.note
    with recorded() as fixed:
        for book in Book.objects.select_related("author").only("title", "author__name"):
            book.author.name  # noqa: B018
    assert fixed.record.query_count == 1


def test_a_loaded_field_costs_nothing_and_is_no_n_plus_one() -> None:
    with recorded() as result:
        for book in Book.objects.only("id", "title"):
            book.title  # noqa: B018
    assert result.record.n_plus_one == []
    assert result.record.query_count == 1


fetch_modes = pytest.mark.skipif(
    not hasattr(__import__("django.db.models").db.models, "FETCH_PEERS"),
    reason="fetch modes are new in Django 6.1",
)


@fetch_modes
@pytest.mark.parametrize(
    ("loop", "relation"),
    [
        (lambda qs: [b.author.name for b in qs], "tests.Book.author"),
        (lambda qs: [b.title for b in qs.defer("title")], "tests.Book.title"),
    ],
)
def test_on_django_61_fetch_peers_is_offered_and_batches(loop: Any, relation: str) -> None:
    from django.db import models

    with recorded() as result:
        expected = loop(Book.objects.order_by("pk"))
    group = only_group(result)
    assert group.relation == relation
    assert group.note is not None
    assert ".fetch_mode(models.FETCH_PEERS)" in group.note
    with recorded() as fixed:
        pasted = loop(Book.objects.order_by("pk").fetch_mode(models.FETCH_PEERS))
    assert pasted == expected
    assert fixed.record.n_plus_one == []
    assert fixed.record.query_count == 2


@fetch_modes
def test_on_django_61_fetch_peers_is_not_offered_for_a_related_manager() -> None:
    with recorded() as result:
        for author in Author.objects.order_by("pk"):
            list(author.books.all())
    group = only_group(result)
    assert group.suggestion == 'prefetch_related("books")'
    assert group.note is None


# -- the tags querylens leaves on querysets never get in the way -------------------


def test_querysets_and_objects_pickle_while_recorded() -> None:
    from django.core.cache import cache

    with recorded() as result:
        authors = list(Author.objects.order_by("pk").prefetch_related("books"))
        refined = authors[0].books.filter(title__endswith=".0")
        # Django's cache pickles what it is given: objects with their
        # prefetched relations, and querysets (evaluated or not).
        cache.set("authors", authors)
        cache.set("refined", refined)
        restored = pickle.loads(pickle.dumps(refined))
        titles = [book.title for book in restored]
    assert titles == [book.title for book in refined]
    assert [a.books.all()[0].pk for a in cache.get("authors")] == [
        a.books.all()[0].pk for a in authors
    ]
    assert list(cache.get("refined")) == list(refined)
    assert result.record.query_count >= 2


@pytest.mark.django_db(transaction=True)
async def test_afirst_per_parent_in_async_code_gets_the_sliced_prefetch() -> None:
    with recorded() as result:
        latest = [
            await author.books.order_by("-id").afirst()  # line: afirst
            async for author in Author.objects.order_by("pk")
        ]
    group = only_group(result)
    assert group.relation == "tests.Author.books"
    assert group.suggestion == (
        'prefetch_related(Prefetch("books", queryset=Book.objects.order_by("-id")[:1], '
        'to_attr="first_books"))'
    )
    at(group, "afirst")
    with recorded() as fixed:
        queryset = paste(Author.objects.order_by("pk"), group.suggestion)
        pasted = [author.first_books[0] async for author in queryset]
    assert pasted == latest
    assert fixed.record.query_count == 2 < result.record.query_count
