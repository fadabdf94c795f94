"""Small helpers shared by the tests."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from django.db import connections

from querylens.records import RequestRecord
from querylens.storage import get_storage

VIEWS_FILE = "tests/views.py"


def line_of(marker: str, module: Any = None) -> int:
    """Line number of the ``# line: <marker>`` comment in tests/views.py."""
    if module is None:
        from tests import views as module
    lines, _ = inspect.getsourcelines(module)
    matches = [
        n for n, text in enumerate(lines, start=1) if text.rstrip().endswith(f"# line: {marker}")
    ]
    assert len(matches) == 1, f"marker {marker!r} found {len(matches)} times"
    return matches[0]


def record_of(response: Any) -> RequestRecord:
    """The stored record of a response that carries querylens headers."""
    record = get_storage().get(response["X-QueryLens-Request"])
    assert record is not None, "the request was not stored"
    return record


def latest_record() -> RequestRecord:
    records = get_storage().recent(1)
    assert records, "no request was stored"
    return records[0]


def closes_connections(test: Callable[..., None]) -> Callable[..., None]:
    """Close the test's database connections when it ends.

    With Playwright's greenlets in the test, the connections the test body
    opens are not the ones the test database teardown sees; left open, they
    block dropping a PostgreSQL or MariaDB test database.
    """

    @functools.wraps(test)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            test(*args, **kwargs)
        finally:
            connections.close_all()

    return wrapper


ALL_PERMISSIONS = (
    "querylens.view_hotspotspage",
    "querylens.view_requestspage",
    "querylens.explain_query",
)


def querylens_staff(
    username: str, password: str | None = "x", *, perms: tuple[str, ...] = ALL_PERMISSIONS
) -> Any:
    """An active staff user holding ``perms`` (querylens's, by default all three)."""
    from django.contrib.auth.models import Permission, User

    user = User.objects.create_user(username, password=password, is_staff=True)
    codenames = [perm.split(".", 1)[1] for perm in perms]
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="querylens", codename__in=codenames)
    )
    assert user.user_permissions.count() == len(perms), "a querylens permission is missing"
    return User.objects.get(pk=user.pk)  # fresh: no stale permission cache
