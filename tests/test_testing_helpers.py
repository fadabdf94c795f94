"""querylens.testing: helpers for a project's own test suite."""

from __future__ import annotations

import pytest

from querylens.testing import assert_no_n_plus_one, recorded
from tests.models import Author, Book


@pytest.mark.usefixtures("library")
def test_assert_no_n_plus_one_fails_with_the_fix() -> None:
    with pytest.raises(AssertionError) as info, assert_no_n_plus_one():
        [book.author.name for book in Book.objects.all()]
    message = str(info.value)
    assert message.startswith("1 N+1 group(s) found:")
    assert "6 x" in message
    assert "tests/test_testing_helpers.py:" in message
    assert "via tests.Book.author" in message
    assert 'fix: select_related("author")' in message


@pytest.mark.usefixtures("library")
def test_assert_no_n_plus_one_passes_for_clean_code() -> None:
    with assert_no_n_plus_one() as result:
        [book.author.name for book in Book.objects.select_related("author")]
    assert result.record.query_count == 1


@pytest.mark.usefixtures("library")
def test_recorded_gives_the_analysis() -> None:
    with recorded() as result:
        for author in Author.objects.all():
            list(author.books.all())
    record = result.record
    assert record.query_count == 4
    assert [g.relation for g in record.n_plus_one] == ["tests.Author.books"]


@pytest.mark.usefixtures("library")
def test_nested_recording_analyses_only_the_inner_block() -> None:
    with recorded() as outer:
        list(Book.objects.all())
        with recorded() as inner:
            [book.author.name for book in Book.objects.all()]
    assert inner.record.query_count == 7
    assert outer.record.query_count == 8


@pytest.mark.usefixtures("library")
def test_threshold_argument() -> None:
    with assert_no_n_plus_one(threshold=10):
        [book.author.name for book in Book.objects.all()]
