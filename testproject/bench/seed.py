"""The benchmark's catalogue: fixed, so every run measures the same pages."""

from __future__ import annotations

import datetime
from decimal import Decimal

from django.db import transaction

BOOKS = 100
AUTHORS = 25
PUBLISHERS = 5
TAGS = 10


def seed() -> None:
    """Fill an empty, migrated database (the file is new for every run)."""
    from shop.models import Author, Book, Publisher, Review, Tag

    with transaction.atomic():
        publishers = Publisher.objects.bulk_create(
            Publisher(name=f"Publisher {n:02d}") for n in range(PUBLISHERS)
        )
        authors = Author.objects.bulk_create(Author(name=f"Author {n:03d}") for n in range(AUTHORS))
        Tag.objects.bulk_create(Tag(name=f"Tag {n:02d}") for n in range(TAGS))
        books = Book.objects.bulk_create(
            Book(
                title=f"Book {n:03d}",
                # Each author has several books, as in a real shop: the N+1
                # page's author queries repeat (querylens counts duplicates).
                author=authors[n % AUTHORS],
                publisher=publishers[n % PUBLISHERS],
                published=datetime.date(1990 + n % 35, 1 + n % 12, 1 + n % 28),
                price=Decimal(5 + n % 40) + Decimal("0.99"),
            )
            for n in range(BOOKS)
        )
        Review.objects.bulk_create(
            Review(book=book, rating=1 + (n + k) % 5, text=f"Review {k} of {n}")
            for n, book in enumerate(books)
            for k in range(2)
        )
