"""Views exercising each kind of N+1 and its clean twin.

Lines that trigger queries carry a ``# line: name`` marker so tests can find
the expected call site without hard-coding line numbers.
"""

from __future__ import annotations

import csv
from collections.abc import AsyncIterator, Iterator
from typing import Any

from django.db import connection, transaction
from django.db.models import Count, Prefetch
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import render

from tests.models import Author, Book, Comment, Publisher


def _text(values: list[object]) -> HttpResponse:
    return HttpResponse(", ".join(map(str, values)))


def fk_loop(request: HttpRequest) -> HttpResponse:
    names = []
    for book in Book.objects.order_by("pk"):
        names.append(book.author.name)  # line: fk_loop
    return _text(names)


def fk_loop_fixed(request: HttpRequest) -> HttpResponse:
    return _text([book.author.name for book in Book.objects.select_related("author")])


def reverse_fk(request: HttpRequest) -> HttpResponse:
    titles = []
    for author in Author.objects.order_by("pk"):
        titles.extend(book.title for book in author.books.all())  # line: reverse_fk
    return _text(titles)


def reverse_fk_fixed(request: HttpRequest) -> HttpResponse:
    authors = Author.objects.prefetch_related("books")
    return _text([book.title for author in authors for book in author.books.all()])


def reverse_fk_prefetch_object(request: HttpRequest) -> HttpResponse:
    by_title = Prefetch("books", queryset=Book.objects.order_by("title"))
    authors = Author.objects.prefetch_related(by_title)
    return _text([book.title for author in authors for book in author.books.all()])


def m2m(request: HttpRequest) -> HttpResponse:
    return _text([tag.name for book in Book.objects.all() for tag in book.tags.all()])  # line: m2m


def m2m_fixed(request: HttpRequest) -> HttpResponse:
    books = Book.objects.prefetch_related("tags")
    return _text([tag.name for book in books for tag in book.tags.all()])


def reverse_m2m(request: HttpRequest) -> HttpResponse:
    from tests.models import Tag

    tags = Tag.objects.all()
    return _text([b.title for tag in tags for b in tag.books.all()])  # line: reverse_m2m


def reverse_one_to_one(request: HttpRequest) -> HttpResponse:
    return _text([author.profile.bio for author in Author.objects.all()])  # line: reverse_o2o


def reverse_one_to_one_fixed(request: HttpRequest) -> HttpResponse:
    return _text([author.profile.bio for author in Author.objects.select_related("profile")])


def nested(request: HttpRequest) -> HttpResponse:
    names = []
    for author in Author.objects.order_by("pk"):
        for book in author.books.all():  # line: nested_outer
            names.append(book.publisher.name)  # line: nested_inner
    return _text(names)


def nested_after_prefetch(request: HttpRequest) -> HttpResponse:
    names = []
    for author in Author.objects.prefetch_related("books"):
        for book in author.books.all():
            names.append(book.publisher.name)  # line: nested_prefetch
    return _text(names)


def nested_fixed(request: HttpRequest) -> HttpResponse:
    authors = Author.objects.prefetch_related("books__publisher")
    return _text([b.publisher.name for a in authors for b in a.books.all()])


def chained_forward(request: HttpRequest) -> HttpResponse:
    return _text([book.author.publisher.name for book in Book.objects.all()])  # line: chained


def get_loop(request: HttpRequest) -> HttpResponse:
    ids = list(Book.objects.values_list("pk", flat=True))
    return _text([Book.objects.get(pk=pk).title for pk in ids])  # line: get_loop


def get_loop_fixed(request: HttpRequest) -> HttpResponse:
    ids = list(Book.objects.values_list("pk", flat=True))
    return _text([book.title for book in Book.objects.in_bulk(ids).values()])


def count_loop(request: HttpRequest) -> HttpResponse:
    return _text([author.books.count() for author in Author.objects.all()])  # line: count_loop


def count_loop_fixed(request: HttpRequest) -> HttpResponse:
    return _text([a.n for a in Author.objects.annotate(n=Count("books"))])


def generic_fk(request: HttpRequest) -> HttpResponse:
    return _text([c.content_object.title for c in Comment.objects.all()])  # line: generic_fk


def generic_relation(request: HttpRequest) -> HttpResponse:
    books = Book.objects.all()
    return _text([c.text for b in books for c in b.comments.all()])  # line: generic_rel


def single_lazy_access(request: HttpRequest) -> HttpResponse:
    book = Book.objects.order_by("pk").first()
    assert book is not None
    return _text([book.author.name])


def duplicates(request: HttpRequest) -> HttpResponse:
    first = Publisher.objects.filter(pk=1).count()  # line: dup_first
    second = Publisher.objects.filter(pk=1).count()  # line: dup_second
    return _text([first, second])


def raw_loop(request: HttpRequest) -> HttpResponse:
    names = []
    with connection.cursor() as cursor:
        for pk in Book.objects.values_list("author_id", flat=True):
            cursor.execute("SELECT name FROM tests_author WHERE id = %s", [pk])  # line: raw_loop
            names.append(cursor.fetchone()[0])
    return _text(names)


def executemany(request: HttpRequest) -> HttpResponse:
    with connection.cursor() as cursor:
        sql = "UPDATE tests_tag SET name = %s WHERE id = %s"
        cursor.executemany(sql, [("x", 1), ("y", 2)])  # line: executemany
    return _text(["ok"])


def failing_query(request: HttpRequest) -> HttpResponse:
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SELECT * FROM no_such_table")  # line: failing
    except Exception as exc:
        return _text([type(exc).__name__])
    return _text(["unexpected"])


def savepoints(request: HttpRequest) -> HttpResponse:
    # Each inner block creates and releases a savepoint with a new name, from
    # the same line: statements that must never look like an N+1.
    with transaction.atomic():
        for _ in range(3):
            with transaction.atomic():
                pass
        count = Publisher.objects.count()
    return _text([count])


def template_fk(request: HttpRequest) -> HttpResponse:
    return render(request, "tests/books.html", {"books": Book.objects.order_by("pk")})


def template_fk_fixed(request: HttpRequest) -> HttpResponse:
    return render(request, "tests/books.html", {"books": Book.objects.select_related("author")})


def no_queries(request: HttpRequest) -> HttpResponse:
    return _text(["nothing"])


def server_timing(request: HttpRequest) -> HttpResponse:
    response = _text([Publisher.objects.count()])
    response["Server-Timing"] = 'app;dur=1.5;desc="view"'
    return response


async def async_get_loop(request: HttpRequest) -> HttpResponse:
    names = []
    async for book in Book.objects.order_by("pk"):
        author = await Author.objects.aget(pk=book.author_id)  # line: async_get
        names.append(author.name)
    return _text(names)


async def async_fixed(request: HttpRequest) -> HttpResponse:
    names = [book.author.name async for book in Book.objects.select_related("author")]
    return _text(names)


def json_ok(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"count": Book.objects.count()})


def _author_name(book: Book) -> str:
    return book.author.name  # line: helper


def two_callers(request: HttpRequest) -> HttpResponse:
    books = list(Book.objects.order_by("pk"))
    first = [_author_name(book) for book in books[:3]]  # line: caller_one
    second = [_author_name(book) for book in books[3:]]  # line: caller_two
    return _text(first + second)


def whoami(request: HttpRequest) -> HttpResponse:
    """Reads ``request.user`` (as most pages of a real site do), then loops."""
    names = [request.user.get_username() or "anonymous"]
    names += [book.author.name for book in Book.objects.order_by("pk")]  # line: whoami
    return _text(names)


async def async_whoami(request: HttpRequest) -> HttpResponse:
    user = await request.auser()
    names = [user.get_username() or "anonymous"]
    async for book in Book.objects.order_by("pk"):
        author = await Author.objects.aget(pk=book.author_id)
        names.append(author.name)
    return _text(names)


def mutated_params(request: HttpRequest) -> HttpResponse:
    """A raw cursor whose params list the code reuses and changes afterwards."""
    params: list[object] = ["first"]
    with connection.cursor() as cursor:
        cursor.execute("SELECT id FROM tests_author WHERE name = %s", params)
        rows = cursor.fetchall()
        params[0] = "changed after the query"
        params.append("and grown")
    return _text([len(rows)])


#: How many times ``huge_statement`` runs its statement; its SQL text is
#: ``HUGE_SQL_CHARS`` characters long, built afresh each time.
HUGE_REPEATS = 20
HUGE_SQL_CHARS = 10 * 1024 * 1024


def huge_statement(request: HttpRequest) -> HttpResponse:
    rows = 0
    with connection.cursor() as cursor:
        for number in range(HUGE_REPEATS):
            head, tail = f"SELECT {number} /* ", " */"
            cursor.execute(head + "x" * (HUGE_SQL_CHARS - len(head) - len(tail)) + tail)
            rows += len(cursor.fetchall())
    return _text([rows])


def deep_recursion(request: HttpRequest) -> HttpResponse:
    """Runs one query ``?spare=N`` frames short of Python's recursion limit.

    Answers ``ok <count>``, or ``overflow`` when the query itself ran out of
    stack: the test compares the smallest ``spare`` that works with and
    without querylens.
    """

    def depth_left(depth: int) -> int:
        try:
            return depth_left(depth + 1)
        except RecursionError:
            return depth

    floor = depth_left(0)
    target = floor - int(request.GET.get("spare", "100"))
    results: list[str] = []

    def query_at(depth: int) -> None:
        if depth < target:
            query_at(depth + 1)
            return
        try:
            results.append(f"ok {Book.objects.count()}")
        except RecursionError:
            results.append("overflow")

    query_at(0)
    return HttpResponse(results[0])


class _Echo:
    """Django's CSV-streaming recipe: a file-like object that hands back what it is given."""

    def write(self, value: str) -> str:
        return value


def _csv_rows(books: Any) -> Iterator[str]:
    writer = csv.writer(_Echo())
    yield writer.writerow(["title", "author"])
    for book in books:
        yield writer.writerow([book.title, book.author.name])  # line: csv row


def streamed_csv(request: HttpRequest) -> StreamingHttpResponse:
    return StreamingHttpResponse(_csv_rows(Book.objects.order_by("pk")), content_type="text/csv")


def streamed_csv_fixed(request: HttpRequest) -> StreamingHttpResponse:
    books = Book.objects.order_by("pk").select_related("author")
    return StreamingHttpResponse(_csv_rows(books), content_type="text/csv")


async def _async_rows() -> AsyncIterator[str]:
    async for book in Book.objects.order_by("pk"):
        author = await Author.objects.aget(pk=book.author_id)  # line: async stream row
        yield f"{book.title},{author.name}\n"


async def async_streamed(request: HttpRequest) -> StreamingHttpResponse:
    return StreamingHttpResponse(_async_rows(), content_type="text/csv")
