"""Verdicts on the Django admin's own pages: code querylens did not write."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client

from tests.helpers import latest_record

pytestmark = pytest.mark.usefixtures("library")


@pytest.fixture
def admin_user_client(db: None) -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("root", "root@example.com", "x"))
    return client


@pytest.mark.parametrize("url", ["/admin/tests/author/", "/admin/tests/book/"])
def test_a_clean_changelist_has_no_n_plus_one(admin_user_client: Client, url: str) -> None:
    response = admin_user_client.get(url)
    assert response.status_code == 200
    record = latest_record()
    assert record.path == url
    # The changelist counts its rows twice (the paginator's count and the
    # full count), from two different lines of the admin: duplicates of each
    # other at most, never an N+1.
    assert [(g.count, g.sample_sql[:60]) for g in record.n_plus_one] == []


def test_a_foreign_key_in_list_display_is_an_n_plus_one_that_list_select_related_removes(
    admin_user_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django.contrib import admin

    from tests.models import Book

    book_admin = admin.site._registry[Book]
    monkeypatch.setattr(book_admin, "list_display", ("title", "author"))
    # An empty tuple turns off the select_related() the changelist adds for
    # foreign keys in list_display: the admin's own code then loads each
    # author, no frame of the project's code involved.
    monkeypatch.setattr(book_admin, "list_select_related", ())
    admin_user_client.get("/admin/tests/book/")
    record = latest_record()
    (group,) = record.n_plus_one
    assert group.relation == "tests.Book.author"
    assert group.count == Book.objects.count()
    # Django's admin templates are no call site of the project's; naming the
    # ModelAdmin's list_display entry instead is not done yet.
    assert group.callsite is None
    # Pasted as the admin spells it, the fix removes the repetition.
    monkeypatch.setattr(book_admin, "list_select_related", ("author",))
    admin_user_client.get("/admin/tests/book/")
    fixed = latest_record()
    assert fixed.n_plus_one == []
    assert fixed.query_count <= record.query_count - group.count + 1
