"""The fix rules on their own: what each query shape and relation path gets.

``tests/test_fixes.py`` proves the fixes by pasting them into real loops;
these cover the rules' remaining branches with the inputs the hooks record.
"""

from __future__ import annotations

import pytest

from querylens.fixes import (
    BULK_NOTE,
    DELETE_NOTE,
    PACKAGE_REFINED_NOTE,
    REFINED_NOTE,
    TEMPLATE_WRITE_NOTE,
    DeferredLoad,
    Refinement,
    fix_for,
    related_model,
)

BOOKS = (("books", "multi"),)


@pytest.mark.parametrize(
    ("sql", "suggestion", "note"),
    [
        ('INSERT INTO "t" ("a") VALUES (%s)', "bulk_create(objs)", BULK_NOTE),
        ('UPDATE "t" SET "a" = %s WHERE "id" = %s', "bulk_update(objs, fields)", BULK_NOTE),
        ('DELETE FROM "t" WHERE "id" = %s', "filter(pk__in=ids).delete()", DELETE_NOTE),
        ('SELECT COUNT(*) AS "__count" FROM "t" WHERE "a" = %s', "annotate(n=Count(...))", None),
        ("VACUUM", None, None),
    ],
)
def test_queries_without_a_relation_get_a_fix_by_their_shape(
    sql: str, suggestion: str | None, note: str | None
) -> None:
    fix = fix_for(sql, ())
    assert (fix.suggestion, fix.note) == (suggestion, note)


def test_a_write_the_project_does_not_loop_over_gets_no_bulk_fix() -> None:
    fix = fix_for('INSERT INTO "t" ("a") VALUES (%s)', (), not_own_loop=True)
    assert (fix.suggestion, fix.note) == (None, TEMPLATE_WRITE_NOTE)


@pytest.mark.django_db
def test_an_aggregate_on_a_column_no_field_has_says_what_helps_without_a_guess() -> None:
    sql = 'SELECT SUM("tests_order"."nothing") AS "x" FROM "tests_order" WHERE "author_id" = %s'
    fix = fix_for(sql, (("orders", "multi"),), relation="tests.Author.orders")
    assert fix.suggestion is None
    assert fix.note is not None
    assert fix.note.startswith("annotate() on the queryset")


def test_an_unknown_relation_gets_no_prefetch_object() -> None:
    fix = fix_for(
        'SELECT "t"."id" FROM "t" WHERE "t"."a" = %s',
        BOOKS,
        relation="nowhere.Model.books",
        refinement=Refinement(filters=("title",)),
    )
    assert fix.suggestion is None
    assert fix.note == REFINED_NOTE.format(attribute="books", to_attr="...")


@pytest.mark.django_db
def test_an_ordering_alone_names_its_list_ordered() -> None:
    fix = fix_for(
        'SELECT "tests_book"."id" FROM "tests_book" WHERE "tests_book"."author_id" = %s',
        BOOKS,
        relation="tests.Author.books",
        refinement=Refinement(order_by=("-title", "...")),
    )
    assert fix.suggestion == (
        'prefetch_related(Prefetch("books", queryset=Book.objects.order_by("-title", ...), '
        'to_attr="ordered_books"))'
    )


def test_a_refinement_inside_another_package_has_no_fix_from_the_project() -> None:
    fix = fix_for(
        'SELECT "x"."id" FROM "x" WHERE "x"."a" = %s',
        BOOKS,
        relation="tests.Author.books",
        refinement=Refinement(filters=("title",), by_package="somecms"),
    )
    assert fix.suggestion is None
    assert fix.note == PACKAGE_REFINED_NOTE.format(package="somecms", lookup="books")


def test_few_loaded_fields_are_listed_with_only() -> None:
    load = DeferredLoad(loaded=("id",), still_deferred=("title", "author", "publisher"))
    fix = fix_for(
        'SELECT "t"."title" FROM "t" WHERE "t"."id" = %s', (("title", "deferred"),), refinement=load
    )
    assert fix.suggestion == 'defer(None).only("id", "title")'


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("relation", "model"),
    [
        ("tests.Author.books", "Book"),  # a reverse relation, by its accessor
        ("tests.Book.author", "Author"),
        ("tests.Book.nothing", None),
        ("tests.Nothing.books", None),
        ("not-a-label", None),
        (None, None),
    ],
)
def test_related_model_follows_a_relation_label(relation: str | None, model: str | None) -> None:
    found = related_model(relation)
    assert (found.__name__ if found is not None else None) == model
