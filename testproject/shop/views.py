"""Demo pages: each N+1 view sits next to its fixed twin.

The N+1 views are written the way they usually appear in real code, on purpose.
Keep the twins identical apart from the fix, so the difference querylens reports is
the fix and nothing else.
"""

from __future__ import annotations

from typing import Any

from django.db import connection
from django.db.models import Avg, Count, Max, Min
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from .demos import DEMOS, DEMOS_BY_NAME
from .models import Author, Book, Publisher, Tag


def _render_demo(
    request: HttpRequest, template: str, url_name: str, context: dict[str, Any]
) -> HttpResponse:
    return render(request, template, {"demo": DEMOS_BY_NAME[url_name], **context})


def index(request: HttpRequest) -> HttpResponse:
    return render(request, "shop/index.html", {"demos": DEMOS})


# Forward foreign key, followed in the template.


def book_list(request: HttpRequest) -> HttpResponse:
    books = Book.objects.all()
    return _render_demo(request, "shop/book_list.html", "book_list", {"books": books})


def book_list_fixed(request: HttpRequest) -> HttpResponse:
    books = Book.objects.select_related("author")
    return _render_demo(request, "shop/book_list.html", "book_list_fixed", {"books": books})


# Forward foreign key, followed in a Python loop in the view.


def book_loop(request: HttpRequest) -> HttpResponse:
    rows = []
    for book in Book.objects.all():
        rows.append({"title": book.title, "author": book.author.name})
    return _render_demo(request, "shop/book_rows.html", "book_loop", {"rows": rows})


def book_loop_fixed(request: HttpRequest) -> HttpResponse:
    rows = []
    for book in Book.objects.select_related("author"):
        rows.append({"title": book.title, "author": book.author.name})
    return _render_demo(request, "shop/book_rows.html", "book_loop_fixed", {"rows": rows})


# Reverse foreign key.


def author_books(request: HttpRequest) -> HttpResponse:
    authors = Author.objects.all()
    return _render_demo(request, "shop/author_books.html", "author_books", {"authors": authors})


def author_books_fixed(request: HttpRequest) -> HttpResponse:
    authors = Author.objects.prefetch_related("books")
    return _render_demo(
        request, "shop/author_books.html", "author_books_fixed", {"authors": authors}
    )


# Many-to-many.


def book_tags(request: HttpRequest) -> HttpResponse:
    books = Book.objects.all()
    return _render_demo(request, "shop/book_tags.html", "book_tags", {"books": books})


def book_tags_fixed(request: HttpRequest) -> HttpResponse:
    books = Book.objects.prefetch_related("tags")
    return _render_demo(request, "shop/book_tags.html", "book_tags_fixed", {"books": books})


# Reverse one-to-one.


def author_profiles(request: HttpRequest) -> HttpResponse:
    authors = Author.objects.all()
    return _render_demo(
        request, "shop/author_profiles.html", "author_profiles", {"authors": authors}
    )


def author_profiles_fixed(request: HttpRequest) -> HttpResponse:
    authors = Author.objects.select_related("profile")
    return _render_demo(
        request,
        "shop/author_profiles.html",
        "author_profiles_fixed",
        {"authors": authors},
    )


# Nested: reverse foreign key, then a forward foreign key on each item.


def author_publishers(request: HttpRequest) -> HttpResponse:
    authors = Author.objects.all()
    return _render_demo(
        request,
        "shop/author_publishers.html",
        "author_publishers",
        {"authors": authors},
    )


def author_publishers_fixed(request: HttpRequest) -> HttpResponse:
    authors = Author.objects.prefetch_related("books__publisher")
    return _render_demo(
        request,
        "shop/author_publishers.html",
        "author_publishers_fixed",
        {"authors": authors},
    )


# .get() in a loop.


def _pick_ids() -> list[int]:
    # A real shop would read these from a session or a recommendation service; the
    # newest twenty books stand in for them here.
    return list(Book.objects.order_by("-published", "pk").values_list("pk", flat=True)[:20])


def book_picks(request: HttpRequest) -> HttpResponse:
    picks = [Book.objects.get(pk=pk) for pk in _pick_ids()]
    return _render_demo(request, "shop/book_picks.html", "book_picks", {"books": picks})


def book_picks_fixed(request: HttpRequest) -> HttpResponse:
    ids = _pick_ids()
    by_id = Book.objects.in_bulk(ids)
    picks = [by_id[pk] for pk in ids if pk in by_id]
    return _render_demo(request, "shop/book_picks.html", "book_picks_fixed", {"books": picks})


# .count() in a loop.


def author_counts(request: HttpRequest) -> HttpResponse:
    rows = [{"name": author.name, "n": author.books.count()} for author in Author.objects.all()]
    return _render_demo(request, "shop/author_counts.html", "author_counts", {"rows": rows})


def author_counts_fixed(request: HttpRequest) -> HttpResponse:
    authors = Author.objects.annotate(n=Count("books"))
    rows = [{"name": author.name, "n": author.n} for author in authors]
    return _render_demo(request, "shop/author_counts.html", "author_counts_fixed", {"rows": rows})


# Async views: the ORM's async API has the same N+1 traps.


async def async_books(request: HttpRequest) -> HttpResponse:
    rows = []
    async for book in Book.objects.all():
        author = await Author.objects.aget(pk=book.author_id)
        rows.append({"title": book.title, "author": author.name})
    # Rendering touches no database: the rows are plain dicts.
    return _render_demo(request, "shop/book_rows.html", "async_books", {"rows": rows})


async def async_books_fixed(request: HttpRequest) -> HttpResponse:
    rows = []
    async for book in Book.objects.select_related("author"):
        rows.append({"title": book.title, "author": book.author.name})
    return _render_demo(request, "shop/book_rows.html", "async_books_fixed", {"rows": rows})


# Raw SQL on a cursor.


def raw_books(request: HttpRequest) -> HttpResponse:
    rows = []
    with connection.cursor() as cursor:
        cursor.execute("SELECT title, author_id FROM shop_book ORDER BY title")
        for title, author_id in cursor.fetchall():
            cursor.execute("SELECT name FROM shop_author WHERE id = %s", [author_id])
            (name,) = cursor.fetchone()
            rows.append({"title": title, "author": name})
    return _render_demo(request, "shop/book_rows.html", "raw_books", {"rows": rows})


def raw_books_fixed(request: HttpRequest) -> HttpResponse:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT b.title, a.name FROM shop_book b"
            " JOIN shop_author a ON a.id = b.author_id ORDER BY b.title"
        )
        rows = [{"title": title, "author": name} for title, name in cursor.fetchall()]
    return _render_demo(request, "shop/book_rows.html", "raw_books_fixed", {"rows": rows})


# Generic relation.


def book_comments(request: HttpRequest) -> HttpResponse:
    books = Book.objects.all()
    return _render_demo(request, "shop/book_comments.html", "book_comments", {"books": books})


def book_comments_fixed(request: HttpRequest) -> HttpResponse:
    books = Book.objects.prefetch_related("comments")
    return _render_demo(request, "shop/book_comments.html", "book_comments_fixed", {"books": books})


# Duplicates: identical queries from different lines are not an N+1.


def duplicates(request: HttpRequest) -> HttpResponse:
    # The page header and the sidebar were written by different people, and each
    # loads what it needs on its own.
    header_publishers = Publisher.objects.count()
    header_tags = list(Tag.objects.all())
    sidebar_tags = list(Tag.objects.all())
    sidebar_publishers = Publisher.objects.count()
    return _render_demo(
        request,
        "shop/duplicates.html",
        "duplicates",
        {
            "header_publishers": header_publishers,
            "header_tags": header_tags,
            "sidebar_tags": sidebar_tags,
            "sidebar_publishers": sidebar_publishers,
        },
    )


# A page with nothing to report.


def clean(request: HttpRequest) -> HttpResponse:
    stats = Book.objects.aggregate(
        books=Count("pk"),
        authors=Count("author", distinct=True),
        cheapest=Min("price"),
        dearest=Max("price"),
        newest=Max("published"),
    )
    top_rated = (
        Book.objects.select_related("author", "publisher")
        .prefetch_related("tags")
        .annotate(rating=Avg("reviews__rating"))
        .order_by("-rating", "title")[:5]
    )
    return _render_demo(
        request, "shop/clean.html", "clean", {"stats": stats, "top_rated": top_rated}
    )
