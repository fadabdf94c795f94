"""Deterministic test data."""

from __future__ import annotations

from tests.models import Author, Book, Comment, Profile, Publisher, Tag


def make_library(authors: int = 3, books_per_author: int = 2, using: str = "default") -> list[Book]:
    """``authors`` authors with a profile, each with ``books_per_author`` books, two tags each."""
    publishers = [Publisher.objects.using(using).create(name=f"Publisher {i}") for i in range(2)]
    tags = [Tag.objects.using(using).create(name=f"tag{i}") for i in range(3)]
    books = []
    for a in range(authors):
        author = Author.objects.using(using).create(name=f"Author {a}", publisher=publishers[a % 2])
        Profile.objects.using(using).create(author=author, bio=f"Bio {a}")
        for b in range(books_per_author):
            book = Book.objects.using(using).create(
                title=f"Book {a}.{b}", author=author, publisher=publishers[b % 2]
            )
            book.tags.set(tags[:2])
            Comment.objects.using(using).create(content_object=book, text="nice")
            books.append(book)
    return books
