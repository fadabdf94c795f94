"""Verdicts on a Django REST framework API: serializers run the loops.

No frame of the project's code is on the stack when a nested serializer or
a dotted ``source`` loads a relation per object: querylens names the
serializer field the project declared, and the fix pasted on the viewset's
queryset removes the repetition.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from tests.helpers import line_of, record_of

api = pytest.importorskip("tests.api", reason="Django REST framework is not installed")

pytestmark = pytest.mark.usefixtures("library")


@pytest.fixture(autouse=True)
def _headers(settings: Any) -> None:
    settings.QUERYLENS = {"HEADERS": "always"}


def get(client: Client, url: str) -> Any:
    response = client.get(url)
    assert response.status_code == 200, response.content[:500]
    return response


def groups_by_relation(record: Any) -> dict[str, Any]:
    return {group.relation: group for group in record.n_plus_one}


def test_a_book_list_names_each_serializer_field_and_the_fix_on_the_viewset(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    response = get(client, "/api/books/")
    record = record_of(response)
    books = len(response.json())
    groups = groups_by_relation(record)
    assert set(groups) == {"tests.Book.author", "tests.Book.publisher", "tests.Book.tags"}
    assert response["X-QueryLens-NPlusOne"] == "3"

    expected = {
        "tests.Book.author": ("author", "nested author", 'select_related("author")'),
        "tests.Book.publisher": ("publisher_name", "dotted source", 'select_related("publisher")'),
        # An implicit ModelSerializer field: declared by its Meta.fields entry.
        "tests.Book.tags": ("tags", "book fields", 'prefetch_related("tags")'),
    }
    for relation, (field, marker, suggestion) in expected.items():
        group = groups[relation]
        assert group.count == books
        assert group.callsite is not None
        assert group.callsite.file == "tests/api.py"
        assert group.callsite.line == line_of(marker, api)
        assert group.callsite.function == f"BookSerializer.{field}"
        assert group.suggestion == suggestion
        assert group.note is not None
        assert "get_queryset()" in group.note

    fixed_queryset = api.BookViewSet.queryset
    for group in record.n_plus_one:
        fixed_queryset = eval(f"queryset.{group.suggestion}", {}, {"queryset": fixed_queryset})
    monkeypatch.setattr(api.BookViewSet, "queryset", fixed_queryset)
    fixed_response = get(client, "/api/books/")
    fixed = record_of(fixed_response)
    assert fixed_response.json() == response.json()
    assert fixed.n_plus_one == []
    assert fixed_response["X-QueryLens-NPlusOne"] == "0"
    assert fixed.query_count == 2 < record.query_count


def test_a_nested_many_serializer_and_a_method_field(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    response = get(client, "/api/authors/")
    record = record_of(response)
    authors = len(response.json())
    by_line = {group.callsite.line: group for group in record.n_plus_one}
    nested = by_line[line_of("nested books", api)]
    assert nested.relation == "tests.Author.books"
    assert nested.callsite.function == "AuthorWithBooksSerializer.books"
    assert nested.suggestion == 'prefetch_related("books")'
    assert nested.count == authors
    # A SerializerMethodField is the project's own code: its line is the call site.
    method = by_line[line_of("method field", api)]
    assert method.callsite.function == "get_book_count"
    assert method.suggestion == 'annotate(n=Count("books"))'
    assert len(record.n_plus_one) == 2

    monkeypatch.setattr(
        api.AuthorViewSet, "queryset", api.AuthorViewSet.queryset.prefetch_related("books")
    )
    fixed_response = get(client, "/api/authors/")
    fixed = record_of(fixed_response)
    assert fixed_response.json() == response.json()
    # The prefetch serves both: the nested list and count() of the cached books.
    assert fixed.n_plus_one == []
    assert fixed.query_count == 2


def test_a_single_object_is_no_loop(client: Client) -> None:
    book_id = get(client, "/api/books/").json()[0]["id"]
    record = record_of(get(client, f"/api/books/{book_id}/"))
    assert record.n_plus_one == []
