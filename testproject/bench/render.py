"""How long the admin pages take with a full buffer (a diagnostic of the benchmark).

Fills an in-memory buffer with ``records`` records of ``queries`` queries
each (one N+1 group of a quarter of them, a duplicate group, the rest of
distinct shapes, eight call sites deep) and times, per size, the hotspots
page, its JSON, the list of requests and one request's page, rendered by the
views as a superuser sees them. Run by ``querylens_benchmark --render`` in a
process of its own (the demo's settings: the admin's templates)::

    DJANGO_SETTINGS_MODULE=testproject.settings python -m bench.render

Prints one JSON object.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
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


def make_record(queries: int) -> Any:
    from querylens.records import (
        CallSite,
        DuplicateGroup,
        NPlusOneGroup,
        QueryRecord,
        RequestRecord,
    )

    outer = [CallSite(f"shop/layer{depth}.py", 10 + depth, f"step{depth}") for depth in range(7)]
    loop = [CallSite("shop/views.py", 40, "book_list"), *outer]
    other = [CallSite("shop/views.py", 60, "dashboard"), *outer]
    n_plus_one = list(range(1, queries // 4 + 1))
    rows = []
    for index in range(queries):
        in_loop = index in n_plus_one
        sql = (
            'SELECT "shop_author"."id", "shop_author"."name" FROM "shop_author" '
            'WHERE "shop_author"."id" = %s LIMIT 21'
            if in_loop
            else f'SELECT COUNT(*) AS "__count" FROM "shop_book" WHERE "shop_book"."price" > %s '
            f"AND {index} = {index}"
        )
        stack = loop if in_loop else other
        rows.append(
            QueryRecord(
                index=index,
                alias="default",
                sql=sql,
                params=[index % 25 + 1],
                duration_ms=0.05,
                fingerprint=f"{1 if in_loop else index:016x}",
                callsite=stack[0],
                stack=stack,
                relation="shop.Book.author" if in_loop else None,
                start_ms=index * 0.06,
            )
        )
    return RequestRecord(
        id="render-template",
        method="GET",
        path="/books/",
        view="shop.views.book_list",
        status=200,
        started_at=dt.datetime(2026, 12, 4, tzinfo=dt.timezone.utc),
        duration_ms=queries * 0.08,
        db_time_ms=queries * 0.05,
        query_count=queries,
        duplicate_count=len(n_plus_one) - 25,
        queries=rows,
        duplicates=[
            DuplicateGroup("0000000000000001", len(n_plus_one), rows[1].sql, n_plus_one[::25])
        ],
        n_plus_one=[
            NPlusOneGroup(
                fingerprint="0000000000000001",
                count=len(n_plus_one),
                total_ms=len(n_plus_one) * 0.05,
                callsite=loop[0],
                relation="shop.Book.author",
                suggestion='select_related("author")',
                sample_sql=rows[1].sql,
                query_indexes=n_plus_one,
                source_query=0,
            )
        ],
    )


def measure(repeat: int = 3) -> dict[str, Any]:
    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.test import RequestFactory

    from querylens import views
    from querylens.storage import MemoryStorage

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
            storage.add(dataclasses.replace(template, id=f"render{number:06d}"))
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
