"""The benchmark's pages: full HTML documents, so the toolbar injects itself."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from bench.pages import stats


def always(request: HttpRequest) -> bool:
    """``SHOW_TOOLBAR_CALLBACK`` of the toolbar variant: show it on every page."""
    return True


def queries(request: HttpRequest) -> HttpResponse:
    rows = [(label, compute()) for label, compute in stats()]
    return render(request, "bench/queries.html", {"rows": rows})


def light(request: HttpRequest) -> HttpResponse:
    from django.db.models import Avg
    from shop.models import Author, Book, Review, Tag

    books = list(Book.objects.select_related("author", "publisher").order_by("id")[:20])
    return render(
        request,
        "bench/light.html",
        {
            "books": books,
            "total": Book.objects.count(),
            "tags": list(Tag.objects.order_by("name")[:10]),
            "rating": Review.objects.aggregate(value=Avg("rating"))["value"],
            "has_authors": Author.objects.filter(name__startswith="Author").exists(),
        },
    )


def scale(request: HttpRequest) -> HttpResponse:
    """``n`` cheap queries from one line, ``depth`` frames of project code below the view."""
    n = int(request.GET.get("n", "1"))
    depth = int(request.GET.get("depth", "0"))
    return HttpResponse(f"<html><body>{_descend(depth, n)}</body></html>")


def _descend(depth: int, n: int) -> int:
    if depth > 0:
        return _descend(depth - 1, n)
    from shop.models import Book

    found = 0
    for number in range(n):
        found += Book.objects.filter(pk=number % 100 + 1).exists()
    return found


def nplusone(request: HttpRequest) -> HttpResponse:
    from shop.models import Book

    # No select_related("author") on purpose: the template loads each author.
    return render(request, "bench/nplusone.html", {"books": Book.objects.all()})
