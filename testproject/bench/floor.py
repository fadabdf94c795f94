"""The floor: the least any per-query recorder costs (reference variants).

Two middlewares that record every query of a request and do nothing else,
as a yardstick for querylens's own cost:

* ``floor``: an execute wrapper that appends ``(sql, params, many, duration)``
  to a list, the cheapest recording there is.
* ``floor-callsite``: the same, plus the innermost frame of the project's own
  code for each query (file and line), found by the shortest walk that can
  find it: outwards from the wrapper, one cached lookup per file.

Neither looks at the records after the request: no duplicates, no N+1, no
stack beyond one frame, no relation, nothing kept. The number of queries
goes into a header so the benchmark can check that each saw them all.
"""

from __future__ import annotations

import os
import sys
import sysconfig
from collections.abc import Callable
from pathlib import Path
from time import perf_counter
from typing import Any

import django
from django.db import connections
from django.http import HttpRequest, HttpResponse

#: The header the benchmark's sanity check reads.
QUERIES_HEADER = "X-Bench-Floor-Queries"
#: The call site of the request's last query, ``file:line`` (``floor-callsite``).
CALLSITE_HEADER = "X-Bench-Floor-Callsite"

_LIBRARY = tuple(
    os.path.join(os.path.abspath(path), "")
    for path in {
        sysconfig.get_paths()["stdlib"],
        sysconfig.get_paths()["purelib"],
        os.path.dirname(os.path.dirname(django.__file__)),
    }
)
_HERE = os.path.abspath(__file__)
#: Whether a file is the project's, by name: learnt once per file.
_project_files: dict[str, bool] = {}


def _is_project(filename: str) -> bool:
    known = _project_files.get(filename)
    if known is None:
        path = os.path.abspath(filename)
        known = not filename.startswith("<") and path != _HERE and not path.startswith(_LIBRARY)
        _project_files[filename] = known
    return known


class QueryList:
    """The execute wrapper: one tuple per query."""

    def __init__(self, callsites: bool) -> None:
        self.rows: list[tuple[Any, ...]] = []
        self.callsites = callsites

    def __call__(
        self, execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any
    ) -> Any:
        started = perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            duration = perf_counter() - started
            site = None
            if self.callsites:
                frame = sys._getframe(1)
                while frame is not None:
                    code = frame.f_code
                    if _is_project(code.co_filename):
                        site = (code.co_filename, frame.f_lineno)
                        break
                    frame = frame.f_back
            self.rows.append((sql, params, many, duration, site))


def _middleware(callsites: bool) -> Callable[..., Any]:
    def factory(get_response: Callable[[HttpRequest], HttpResponse]) -> Any:
        def middleware(request: HttpRequest) -> HttpResponse:
            queries = QueryList(callsites)
            with connections["default"].execute_wrapper(queries):
                response = get_response(request)
            response[QUERIES_HEADER] = str(len(queries.rows))
            if callsites and queries.rows and queries.rows[-1][4] is not None:
                filename, line = queries.rows[-1][4]
                response[CALLSITE_HEADER] = f"{Path(filename).name}:{line}"
            return response

        return middleware

    return factory


floor_middleware = _middleware(callsites=False)
floor_callsite_middleware = _middleware(callsites=True)
