"""capture: recording blocks, pausing, and installation of the wrapper."""

from __future__ import annotations

import pytest
from django.db import connection

from querylens.capture import execute_wrapper, install, paused
from querylens.testing import recorded
from tests.models import Book


@pytest.mark.usefixtures("library")
def test_paused_blocks_are_not_recorded() -> None:
    with recorded() as result:
        Book.objects.count()
        with paused():
            Book.objects.count()
            Book.objects.count()
        Book.objects.count()
    assert result.record.query_count == 2


@pytest.mark.django_db
def test_the_wrapper_is_installed_once_and_first() -> None:
    def other(execute, sql, params, many, context):  # type: ignore[no-untyped-def]
        return execute(sql, params, many, context)

    with connection.execute_wrapper(other):
        install(connection)
        install(connection)
        assert connection.execute_wrappers.count(execute_wrapper) == 1
        assert connection.execute_wrappers[0] is execute_wrapper
    # connection.execute_wrapper() popped its own wrapper, not ours.
    assert connection.execute_wrappers == [execute_wrapper]
