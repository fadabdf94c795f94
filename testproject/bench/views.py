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


def nplusone(request: HttpRequest) -> HttpResponse:
    from shop.models import Book

    # No select_related("author") on purpose: the template loads each author.
    return render(request, "bench/nplusone.html", {"books": Book.objects.all()})
