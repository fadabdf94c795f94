"""How long the admin pages take with a full buffer (a diagnostic of the benchmark).

Fills an in-memory buffer with ``records`` records of ``queries`` queries
each, recorded and analysed as the middleware does it (a quarter of them
one N+1 group whose loads repeat, the rest of distinct shapes, eight calls
of the project's code deep), and times, per size, the hotspots
page, its JSON, the list of requests and one request's page, rendered by the
views as a superuser sees them. Run by ``querylens_benchmark --render`` in a
process of its own (the demo's settings: the admin's templates)::

    DJANGO_SETTINGS_MODULE=testproject.settings python -m bench.render

Prints one JSON object.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from time import perf_counter
from typing import Any

if __package__ in (None, ""):
    _HERE = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
    sys.path[:0] = [str(_HERE.parent), str(_HERE.parent.parent)]

#: (records, queries per record): 100 and 1,000 records of 100 and 1,000 queries.
SIZES = ((100, 100), (100, 1000), (1000, 100), (1000, 1000))


def sizes() -> tuple[tuple[int, int], ...]:
    """``SIZES``, or ``QUERYLENS_RENDER_SIZES`` such as ``10x10,20x50`` (a quick run)."""
    import os

    given = os.environ.get("QUERYLENS_RENDER_SIZES")
    if not given:
        return SIZES
    return tuple(
        (int(records), int(queries))
        for records, queries in (part.split("x") for part in given.split(","))
    )


def _descend(depth: int, queries: int) -> None:
    """The project's code a few calls deep, as a view's helpers would be."""
    if depth > 0:
        _descend(depth - 1, queries)
        return
    from django.db.models import Count
    from shop.models import Book

    # A quarter of the queries: the books, then their authors loaded one
    # book at a time (one N+1 group, shop.Book.author). The 25 authors
    # have four books each, so from the 26th load on each repeats an
    # earlier one exactly (duplicates); past the 100th book the list starts
    # again, its authors forgotten.
    books = list(Book.objects.order_by("id"))
    loads = max(2, queries // 4 - 1)
    for number in range(loads):
        book = books[number % len(books)]
        book._state.fields_cache.pop("author", None)
        book.author.name  # noqa: B018 (the lazy load is the point)
    # The rest: queries of distinct shapes (the alias is part of the shape).
    for number in range(queries - 1 - loads):
        Book.objects.filter(price__gt=number).aggregate(**{f"n{number}": Count("id")})


def make_record(queries: int) -> Any:
    """A record of ``queries`` queries, made as the middleware makes one.

    The queries run on the seeded database inside a recording, eight calls
    of the project's code deep, and the one recording lifecycle analyses
    them: the record holds what a request's does (its queries as the
    analysis's columns, built only when a page reads them).
    """
    from querylens.testing import recorded

    with recorded(name="/books/") as result:
        _descend(7, queries)
    record = result.record
    groups = [(group.relation, group.suggestion) for group in record.n_plus_one]
    if record.query_count != queries or groups != [
        ("shop.Book.author", 'select_related("author")')
    ]:
        raise RuntimeError(
            f"the record is not the one described: {queries} queries wanted, "
            f"{record.query_count} recorded, N+1 groups {groups}"
        )
    return record


def copy_of(record: Any, record_id: str) -> Any:
    """Another record like ``record``, its queries still unbuilt.

    ``dataclasses.replace()`` and ``copy.copy()`` would read (build) the
    queries; a buffer of records from real requests holds none built.
    """
    copy = object.__new__(type(record))
    copy.__dict__.update(record.__dict__)
    copy.id = record_id
    return copy


def measure(repeat: int = 3) -> dict[str, Any]:
    import os
    import tempfile

    # A seeded database of the benchmark's shop, made for this run.
    folder = tempfile.mkdtemp(prefix="querylens-render-")
    os.environ["QUERYLENS_DEMO_DB"] = os.path.join(folder, "render.sqlite3")
    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.test import RequestFactory

    from bench.worker import prepare_database
    from querylens import views
    from querylens.storage import MemoryStorage

    prepare_database()
    user = User(username="bench", is_staff=True, is_superuser=True, is_active=True)
    factory = RequestFactory()

    def timed(view: Any, path: str, *args: Any, data: dict[str, str] | None = None) -> float:
        times = []
        for _ in range(repeat):
            request = factory.get(path, data or {})
            request.user = user
            started = perf_counter()
            response = view(request, *args)
            times.append((perf_counter() - started) * 1000)
            assert response.status_code == 200, (path, response.status_code)
        return statistics.median(times)

    rows = []
    for records, queries in sizes():
        template = make_record(queries)
        storage = MemoryStorage(size=records)
        for number in range(records):
            storage.add(copy_of(template, f"render{number:06d}"))
        views.get_storage = lambda storage=storage: storage  # type: ignore[attr-defined]
        rows.append(
            {
                "records": records,
                "queries": queries,
                "hotspots_ms": timed(views.hotspots, "/admin/querylens/"),
                "hotspots_json_ms": timed(
                    views.hotspots, "/admin/querylens/", data={"format": "json"}
                ),
                "requests_ms": timed(views.requests, "/admin/querylens/requests/"),
                "request_ms": timed(
                    views.request_detail, "/admin/querylens/requests/render000000/", "render000000"
                ),
            }
        )
    return {"rows": rows, "repeat": repeat}


if __name__ == "__main__":
    print(json.dumps(measure()))
