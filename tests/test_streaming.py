"""Queries run while a streaming response is consumed belong to its request."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import AsyncClient, Client

from querylens.storage import get_storage
from tests.helpers import VIEWS_FILE, line_of

pytestmark = pytest.mark.usefixtures("library")


@pytest.fixture(autouse=True)
def _headers(settings: Any) -> None:
    settings.QUERYLENS = {"HEADERS": "always"}


def stored(request_id: str) -> Any:
    record = get_storage().get(request_id)
    assert record is not None, "the streamed request was not stored"
    return record


def test_the_csv_streaming_recipe_shows_its_n_plus_one_after_the_stream(client: Client) -> None:
    response = client.get("/streamed_csv/")
    assert response.status_code == 200
    # Sent before the body ran: the id, never counts that would be wrong.
    request_id = response["X-QueryLens-Request"]
    assert "X-QueryLens-Queries" not in response
    assert "X-QueryLens-NPlusOne" not in response
    assert get_storage().get(request_id) is None  # not finished while streaming

    body = b"".join(response.streaming_content)
    rows = body.decode().splitlines()
    assert rows[0] == "title,author"
    assert len(rows) == 7  # the body is the view's, unchanged
    record = stored(request_id)
    assert record.path == "/streamed_csv/"
    assert record.query_count == 7
    (group,) = record.n_plus_one
    assert group.relation == "tests.Book.author"
    assert group.count == 6
    assert (group.callsite.file, group.callsite.line) == (VIEWS_FILE, line_of("csv row"))
    assert group.suggestion == 'select_related("author")'

    fixed = client.get("/streamed_csv_fixed/")
    assert b"".join(fixed.streaming_content) == body
    fixed_record = stored(fixed["X-QueryLens-Request"])
    assert fixed_record.query_count == 1
    assert fixed_record.n_plus_one == []


def test_a_stream_closed_early_is_stored_with_what_ran(client: Client) -> None:
    response = client.get("/streamed_csv/")
    chunks = iter(response.streaming_content)
    next(chunks)  # the header row
    next(chunks)  # the first book: its query and its author's
    response.close()  # the client went away
    record = stored(response["X-QueryLens-Request"])
    assert record.query_count == 2
    assert record.n_plus_one == []
    response.close()  # closing again stores nothing twice
    assert [r.id for r in get_storage().recent()].count(record.id) == 1


@pytest.mark.django_db(transaction=True)
async def test_an_async_stream_shows_its_n_plus_one() -> None:
    client = AsyncClient()
    response = await client.get("/async_streamed/")
    assert response.status_code == 200
    request_id = response["X-QueryLens-Request"]
    body = b"".join([chunk async for chunk in response.streaming_content])
    assert len(body.decode().splitlines()) == 6
    record = stored(request_id)
    # The books, then one author each; a connection the stream's worker
    # thread opens may add the backend's own set-up query (MariaDB asks
    # for @@SQL_AUTO_IS_NULL once per connection), counted like any other.
    assert len([query for query in record.queries if "tests_" in query.sql]) == 7
    assert record.query_count == len(record.queries)
    (group,) = record.n_plus_one
    assert group.count == 6
    assert group.suggestion == "in_bulk(ids)"
    assert (group.callsite.file, group.callsite.line) == (
        VIEWS_FILE,
        line_of("async stream row"),
    )


def test_a_stream_inside_a_recorded_block_is_followed_too(client: Client) -> None:
    from querylens.testing import recorded

    with recorded() as outer:
        response = client.get("/streamed_csv/")
        b"".join(response.streaming_content)
    record = stored(response["X-QueryLens-Request"])
    assert record.query_count == 7
    assert [group.relation for group in record.n_plus_one] == ["tests.Book.author"]
    # The test's own recording saw the same queries, once each.
    assert outer.record.query_count == 7
