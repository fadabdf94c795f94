"""The pages the benchmark times.

* ``light``: a typical small page: 20 books with their author and publisher
  joined (``select_related``, so 40 cached relation accesses in the template),
  and four small queries beside. 5 queries, no N+1.
* ``queries``: a dashboard of 100 figures, each its own cheap query. Every
  query has a different shape (fingerprint), so it is not an N+1 and has no
  duplicates: querylens must report 100 queries, 0 N+1 groups.
* ``nplusone``: 100 books listed with their author, the author loaded lazily in
  the template: 1 + 100 queries, one N+1 group (``shop.Book.author``).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from django.db.models import Count, Max, Min

#: Page name -> (URL path, queries it runs).
PAGES = {
    "light": ("/bench/light/", 5),
    "queries": ("/bench/queries/", 100),
    "nplusone": ("/bench/nplusone/", 101),
}
#: What the report calls them.
TITLES = {
    "light": "light page",
    "queries": "100 queries",
    "nplusone": "100-row N+1",
}
#: N+1 groups querylens must report on each page.
N_PLUS_ONE = {"light": 0, "queries": 0, "nplusone": 1}


def scaling_page(queries: int, depth: int = 0) -> str:
    """Path of the scaling page: ``queries`` queries from ``depth`` frames of the project's code."""
    return f"/bench/scale/?n={queries}&depth={depth}"


#: The scaling section: (title, queries, extra stack depth). Every query
#: has the same shape and line, so past 2 they are one N+1 group, and from
#: 1,000 (MAX_QUERIES_PER_REQUEST) on only the count goes on.
SCALING = (
    ("1 query", 1, 0),
    ("10 queries", 10, 0),
    ("100 queries", 100, 0),
    ("1,000 queries", 1000, 0),
    ("10,000 queries (cap 1,000)", 10000, 0),
    ("100 queries, stack 30", 100, 30),
    ("100 queries, stack 100", 100, 100),
    ("100 queries, stack 300", 100, 300),
)

_LOOKUPS = ("exact", "gt", "gte", "lt", "lte")


def _stats() -> list[tuple[str, Callable[[], Any]]]:
    """100 labelled queries, each of a different shape."""
    from shop.models import Author, Book, Publisher, Review, Tag

    stats: list[tuple[str, Callable[[], Any]]] = []

    def count(model: Any, lookup: str, value: Any) -> None:
        stats.append(
            (
                f"{model.__name__} {lookup}",
                lambda: model.objects.filter(**{lookup: value}).count(),
            )
        )

    def exists(model: Any, lookup: str, value: Any) -> None:
        stats.append(
            (
                f"{model.__name__} {lookup} exists",
                lambda: model.objects.filter(**{lookup: value}).exists(),
            )
        )

    book_values = {
        "price": Decimal("20.99"),
        "published": datetime.date(2005, 6, 1),
        "title": "Book 050",
        "author_id": 12,
        "publisher_id": 3,
    }
    # 25 counts and 25 existence checks: 5 columns x 5 comparison operators.
    for field, value in book_values.items():
        for lookup in _LOOKUPS:
            count(Book, f"{field}__{lookup}", value)
            exists(Book, f"{field}__{lookup}", value)
    # 15 aggregates over the whole table.
    for field in ("price", "published", "id", "author_id", "publisher_id"):
        for function in (Max, Min, Count):
            stats.append(
                (
                    f"Book {function.__name__}({field})",
                    lambda f=function, c=field: Book.objects.aggregate(v=f(c))["v"],
                )
            )
    # 15 counts on the small tables.
    for model, value in ((Author, "Author 010"), (Publisher, "Publisher 02"), (Tag, "Tag 05")):
        for lookup in _LOOKUPS:
            count(model, f"name__{lookup}", value)
    # 10 counts on reviews.
    for lookup in _LOOKUPS:
        count(Review, f"rating__{lookup}", 3)
        count(Review, f"book_id__{lookup}", 40)
    # 10 "cheapest/dearest/oldest..." picks: one row each.
    for field in ("price", "published", "title", "author_id", "publisher_id"):
        for order in (field, f"-{field}"):
            stats.append(
                (
                    f"first by {order}",
                    lambda o=order: (
                        Book.objects.order_by(o).values_list("title", flat=True).first()
                    ),
                )
            )
    return stats


_cache: list[tuple[str, Callable[[], Any]]] = []


def stats() -> list[tuple[str, Callable[[], Any]]]:
    if not _cache:
        _cache.extend(_stats())
    return _cache
