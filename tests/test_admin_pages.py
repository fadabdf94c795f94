"""Verdicts on the Django admin's own pages: code querylens did not write."""

from __future__ import annotations

import ast
import inspect

import django
import pytest
from django.contrib.auth.models import User
from django.test import Client

from tests.admin import BookAdmin, BookInline, PublisherAdmin, ReviewAdmin
from tests.helpers import latest_record, line_of
from tests.models import Publisher, Review

pytestmark = pytest.mark.usefixtures("library")


def declaration_line(admin_class: type, attribute: str) -> int:
    lines, first = inspect.getsourcelines(admin_class)
    (offset,) = [n for n, text in enumerate(lines) if text.strip().startswith(f"{attribute} =")]
    return first + offset


def pasted_tuple(suggestion: str) -> tuple[str, ...]:
    """The value of a ``list_select_related = (...)`` suggestion, as pasted."""
    name, _, value = suggestion.partition(" = ")
    assert name == "list_select_related"
    return ast.literal_eval(value)  # type: ignore[no-any-return]


@pytest.fixture
def admin_user_client(db: None) -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("root", "root@example.com", "x"))
    return client


@pytest.mark.parametrize("url", ["/admin/tests/author/", "/admin/tests/book/"])
def test_a_clean_changelist_has_no_n_plus_one(admin_user_client: Client, url: str) -> None:
    response = admin_user_client.get(url)
    assert response.status_code == 200
    record = latest_record()
    assert record.path == url
    # The changelist counts its rows twice (the paginator's count and the
    # full count), from two different lines of the admin: duplicates of each
    # other at most, never an N+1.
    assert [(g.count, g.sample_sql[:60]) for g in record.n_plus_one] == []


def test_a_foreign_key_in_list_display_is_an_n_plus_one_that_list_select_related_removes(
    admin_user_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django.contrib import admin

    from tests.models import Book

    book_admin = admin.site._registry[Book]
    monkeypatch.setattr(book_admin, "list_display", ("title", "author"))
    # An empty tuple turns off the select_related() the changelist adds for
    # foreign keys in list_display: the admin's own code then loads each
    # author, no frame of the project's code involved.
    monkeypatch.setattr(book_admin, "list_select_related", ())
    admin_user_client.get("/admin/tests/book/")
    record = latest_record()
    (group,) = record.n_plus_one
    assert group.relation == "tests.Book.author"
    assert group.count == Book.objects.count()
    # Django's admin templates are no call site of the project's: the
    # ModelAdmin's list_display is what the project wrote.
    assert group.callsite is not None
    assert (group.callsite.file, group.callsite.function) == (
        "tests/admin.py",
        "BookAdmin.list_display",
    )
    assert group.callsite.line == declaration_line(BookAdmin, "list_display")
    assert group.suggestion == 'list_select_related = ("author",)'
    assert group.note is not None
    assert "tests.admin.BookAdmin" in group.note
    # Pasted as the admin spells it, the fix removes the repetition.
    monkeypatch.setattr(book_admin, "list_select_related", pasted_tuple(group.suggestion))
    admin_user_client.get("/admin/tests/book/")
    fixed = latest_record()
    assert fixed.n_plus_one == []
    assert fixed.query_count <= record.query_count - group.count + 1


def test_a_str_one_join_short_suggests_the_deeper_list_select_related(
    admin_user_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django.contrib import admin

    from tests import models

    for book in models.Book.objects.all():
        Review.objects.create(book=book, rating=4)
    admin_user_client.get("/admin/tests/review/")
    record = latest_record()
    (group,) = record.n_plus_one
    assert group.relation == "tests.Book.author"
    # The line that ran it is the project's own: the model's __str__.
    assert group.callsite is not None
    assert (group.callsite.file, group.callsite.line) == (
        "tests/models.py",
        line_of("review str", models),
    )
    # ReviewAdmin has list_select_related = ("book",): one level short.
    assert ReviewAdmin.list_select_related == ("book",)
    assert group.suggestion == 'list_select_related = ("book__author",)'

    review_admin = admin.site._registry[Review]
    monkeypatch.setattr(review_admin, "list_select_related", pasted_tuple(group.suggestion))
    admin_user_client.get("/admin/tests/review/")
    fixed = latest_record()
    assert fixed.n_plus_one == []
    assert fixed.query_count == record.query_count - group.count


class SharedChoicesInline(BookInline):
    """BookInline with the fix querylens's note describes, typed in as written."""

    def formfield_for_foreignkey(self, db_field, request, **kwargs):  # type: ignore[no-untyped-def]
        formfield = super().formfield_for_foreignkey(db_field, request, **kwargs)
        formfield.choices = list(formfield.choices)
        return formfield


def test_inline_choice_fields_are_the_same_query_again_with_the_admin_fix(
    admin_user_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    from querylens.fixes import FORM_CHOICES_NOTE

    publisher = Publisher.objects.order_by("pk").first()
    assert publisher is not None
    url = f"/admin/tests/publisher/{publisher.pk}/change/"
    response = admin_user_client.get(url)
    assert response.status_code == 200
    record = latest_record()
    (group,) = record.n_plus_one
    forms = publisher.books.count() + 1  # the inline's rows and its empty template row
    assert group.count == forms
    assert group.relation is None
    # Not "filter(pk__in=ids)": there are no ids, only the same query again.
    assert group.suggestion is None
    assert group.note == FORM_CHOICES_NOTE
    assert group.callsite is not None
    assert (group.callsite.file, group.callsite.function) == (
        "tests/admin.py",
        "PublisherAdmin.inlines",
    )
    assert group.callsite.line == declaration_line(PublisherAdmin, "inlines")

    monkeypatch.setattr(PublisherAdmin, "inlines", [SharedChoicesInline])
    fixed_response = admin_user_client.get(url)
    assert fixed_response.status_code == 200
    fixed = latest_record()
    assert fixed.n_plus_one == []
    assert fixed.query_count == record.query_count - forms + 1
    # The page shows the same choices.
    assert fixed_response.content.count(b"<option") == response.content.count(b"<option")


@pytest.mark.skipif(
    django.VERSION >= (6, 1), reason="Django 6.1's changelist joins nullable keys of list_display"
)
def test_a_nullable_key_the_changelist_does_not_join_gets_list_select_related(
    admin_user_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django.contrib import admin

    from tests.models import Author

    author_admin = admin.site._registry[Author]
    # With list_select_related left False, the changelist joins the foreign
    # keys of list_display with select_related(), which skips nullable ones.
    monkeypatch.setattr(author_admin, "list_display", ("name", "publisher"))
    assert author_admin.list_select_related is False
    admin_user_client.get("/admin/tests/author/")
    record = latest_record()
    (group,) = record.n_plus_one
    assert group.relation == "tests.Author.publisher"
    assert group.callsite is not None
    assert group.callsite.function == "AuthorAdmin.list_display"
    assert group.suggestion == 'list_select_related = ("publisher",)'
    monkeypatch.setattr(author_admin, "list_select_related", pasted_tuple(group.suggestion))
    admin_user_client.get("/admin/tests/author/")
    fixed = latest_record()
    assert fixed.n_plus_one == []
    assert fixed.query_count < record.query_count


@pytest.mark.skipif(django.VERSION < (6, 1), reason="Django 6.1 changed the changelist's join")
def test_a_nullable_key_in_list_display_is_joined_on_django_61_and_no_n_plus_one(
    admin_user_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django.contrib import admin

    from tests.models import Author

    monkeypatch.setattr(admin.site._registry[Author], "list_display", ("name", "publisher"))
    admin_user_client.get("/admin/tests/author/")
    record = latest_record()
    assert record.n_plus_one == []
    # The publishers came with the authors, in the changelist's own query.
    assert any("JOIN" in query.sql and "tests_publisher" in query.sql for query in record.queries)


def book_titles(author):  # type: ignore[no-untyped-def]
    return ", ".join(book.title for book in author.books.all())  # line: admin method


def test_a_reverse_relation_in_list_display_gets_get_queryset_with_the_prefetch(
    admin_user_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    from django.contrib import admin

    from tests.models import Author

    author_admin = admin.site._registry[Author]
    monkeypatch.setattr(author_admin, "list_display", ("name", book_titles))
    admin_user_client.get("/admin/tests/author/")
    record = latest_record()
    (group,) = record.n_plus_one
    assert group.relation == "tests.Author.books"
    # The project's own function is the call site; the fix is the admin's.
    assert group.callsite is not None
    assert group.callsite.line == line_of("admin method", sys.modules[__name__])
    assert group.suggestion == (
        "def get_queryset(self, request): return "
        'super().get_queryset(request).prefetch_related("books")'
    )
    # Pasted into the ModelAdmin, as written.
    namespace: dict[str, object] = {}
    exec(
        f"class Fixed(type(author_admin)):\n    {group.suggestion}\n",
        {**vars(admin), "type": type, "author_admin": author_admin},
        namespace,
    )
    monkeypatch.setattr(author_admin, "__class__", namespace["Fixed"])
    admin_user_client.get("/admin/tests/author/")
    fixed = latest_record()
    assert fixed.n_plus_one == []
    assert fixed.query_count == record.query_count - group.count + 1
