"""The WSGI application that gunicorn serves in the multi-process tests.

``python -m tests.multiprocess_app prepare [AUTHORS BOOKS_PER_AUTHOR]``
migrates the SQLite file named by ``QUERYLENS_MP_DB`` and fills it with
tests.factories.make_library; gunicorn then serves
``tests.multiprocess_app:application``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from django.http import HttpRequest, HttpResponseBase

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.multiprocess_settings")


class WorkerPidMiddleware:
    """Say which process served a response, so a test can count the workers."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        response = self.get_response(request)
        response["X-Worker-Pid"] = str(os.getpid())
        return response


def prepare(authors: int = 3, books_per_author: int = 2) -> None:
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    from tests.factories import make_library

    make_library(authors=authors, books_per_author=books_per_author)


def __getattr__(name: str) -> object:
    # Built on first access, not at import: Django loads WorkerPidMiddleware
    # from this module while the application is being built.
    if name == "application":
        from django.core.wsgi import get_wsgi_application

        globals()["application"] = get_wsgi_application()
        return globals()["application"]
    raise AttributeError(name)


if __name__ == "__main__":
    if sys.argv[1:2] != ["prepare"]:
        raise SystemExit(__doc__)
    numbers = [int(value) for value in sys.argv[2:4]]
    prepare(*numbers)
