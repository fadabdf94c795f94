"""capture: recording blocks, pausing, and installation of the wrapper."""

from __future__ import annotations

from typing import Any

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


def _skip_if_recorded() -> None:
    from querylens import capture

    if capture.recording_anywhere():
        pytest.skip("this test is itself recorded (pytest --querylens): hooks stay in place")


def _django_descriptors() -> dict[str, object]:
    from django.db.models.fields.related_descriptors import (
        ForwardManyToOneDescriptor,
        ReverseOneToOneDescriptor,
    )
    from django.db.models.query_utils import DeferredAttribute
    from django.db.models.sql.compiler import SQLCompiler

    return {
        "ForwardManyToOneDescriptor.__get__": ForwardManyToOneDescriptor.__get__,
        "ReverseOneToOneDescriptor.__get__": ReverseOneToOneDescriptor.__get__,
        "DeferredAttribute.__get__": DeferredAttribute.__get__,
        "SQLCompiler.execute_sql": SQLCompiler.execute_sql,
    }


@pytest.mark.usefixtures("library")
def test_outside_recordings_django_runs_its_own_descriptors() -> None:
    """Code that is not recorded (a request left out by sampling, a command) pays nothing."""
    from querylens import capture, relations

    _skip_if_recorded()
    capture.settle()
    outside = _django_descriptors()
    assert not any(hasattr(method, "__wrapped__") for method in outside.values())
    with recorded() as result:
        inside = _django_descriptors()
        [book.author.name for book in Book.objects.all()]
    assert all(inside[name] is not outside[name] for name in outside), inside
    assert result.record.n_plus_one[0].relation == "tests.Book.author"
    # The hooks stay for the next recording, until unrecorded work settles them.
    assert relations._hooks_on
    capture.settle()
    assert _django_descriptors() == outside
    assert not relations._hooks_on


@pytest.mark.usefixtures("library")
def test_a_related_manager_first_used_outside_a_recording_is_named_inside_one() -> None:
    from querylens import capture
    from tests.models import Author

    _skip_if_recorded()
    # Django makes the manager class at the first access and caches it.
    [list(author.books.all()) for author in Author.objects.all()]
    with recorded() as result:
        [list(author.books.all()) for author in Author.objects.all()]
    (group,) = result.record.n_plus_one
    assert group.relation == "tests.Author.books"
    assert group.suggestion == 'prefetch_related("books")'
    # And Django's own method is back once unrecorded work settles the hooks.
    capture.settle()
    manager = type(Author.objects.first().books)  # type: ignore[union-attr]
    assert not hasattr(manager.get_queryset, "__wrapped__")
    assert "querylens" not in manager.get_queryset.__code__.co_filename


def test_nested_and_concurrent_recordings_keep_the_hooks_until_the_last_ends() -> None:
    from querylens import capture, relations

    _skip_if_recorded()
    first = recorded()
    second = recorded()
    first.__enter__()
    second.__enter__()
    assert relations._hooks_on
    assert capture.recording_anywhere()
    second.__exit__(None, None, None)
    capture.settle()  # one recording is still active: nothing happens
    assert relations._hooks_on
    first.__exit__(None, None, None)
    assert not capture.recording_anywhere()
    capture.settle()
    assert not relations._hooks_on


@pytest.mark.usefixtures("library")
def test_code_objects_are_forgotten_past_their_bound_and_verdicts_stay_right(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The per-process memory of code objects is bounded (code made at run time could grow it)."""
    from querylens import capture

    def loop() -> list[str]:
        return [book.author.name for book in Book.objects.all()]  # the N+1 line

    generation = capture.code_generation
    # The memory is full: the first code object learnt below makes it forget
    # everything, then there is room for what this test runs.
    bound = len(capture.code_objects) + 500
    monkeypatch.setattr(capture, "MAX_CODE_OBJECTS", bound)
    filler = compile("pass", "<filler>", "exec")
    for number in range(1, bound - len(capture.code_objects) + 1):
        monkeypatch.setitem(capture.code_objects, -number, filler)
    with recorded() as result:
        for number in range(3):
            exec(compile("loop()", f"<made at run time {number}>", "exec"), {"loop": loop})
        loop()
    assert capture.code_generation == generation + 1
    assert -1 not in capture.code_objects
    assert len(capture.code_objects) <= bound
    groups = result.record.n_plus_one
    # The books listed three times from one line (the same query again), the
    # authors of those three runs, and those of the direct call.
    assert sorted(group.count for group in groups) == [3, 6, 18]
    for group in groups:
        assert group.callsite is not None
        assert group.callsite.file == "tests/test_capture.py"
    assert {group.relation for group in groups if group.count > 3} == {"tests.Book.author"}


def test_a_hook_on_an_inherited_method_is_taken_out_without_leaving_a_copy() -> None:
    from querylens.relations import _Patch

    class Base:
        def get(self) -> str:
            return "base"

    class Child(Base):
        pass

    patch = _Patch(Child, "get", lambda self: "hooked")
    patch.apply(True)
    assert Child().get() == "hooked"
    patch.apply(False)
    assert "get" not in Child.__dict__  # the base's method serves it again
    assert Child().get() == "base"


def _lines(record: object) -> list[list[tuple[str, int]]]:
    """Each query's call stack as (function, line), innermost first."""
    return [
        [(site.function, site.line) for site in query.stack]
        for query in record.queries  # type: ignore[attr-defined]
    ]


def _line_of(marker: str) -> int:
    """The line of this file that holds ``marker`` in a comment."""
    from pathlib import Path

    lines = Path(__file__).read_text().splitlines()
    return next(number for number, text in enumerate(lines, 1) if text.endswith(f"# {marker}"))


def _three_lines() -> None:
    Book.objects.count()  # first line
    Book.objects.exists()  # second line
    Book.objects.first()  # third line


def _rows() -> object:
    for book in Book.objects.all():  # generator query
        yield book
        Book.objects.count()  # generator after yield


@pytest.mark.usefixtures("library")
def test_every_query_of_a_function_names_its_own_line_and_the_same_callers() -> None:
    """Queries of one frame share what lies beyond it, never its own line."""
    with recorded() as result:
        _three_lines()  # the caller
    caller = (
        "test_every_query_of_a_function_names_its_own_line_and_the_same_callers",
        _line_of("the caller"),
    )
    assert _lines(result.record) == [
        [("_three_lines", _line_of("first line")), caller],
        [("_three_lines", _line_of("second line")), caller],
        [("_three_lines", _line_of("third line")), caller],
    ]


@pytest.mark.usefixtures("library")
def test_a_generator_resumed_from_two_places_names_each_caller() -> None:
    """A generator's callers change between resumptions: each query names the one of its time."""
    test = "test_a_generator_resumed_from_two_places_names_each_caller"
    with recorded() as result:
        rows = _rows()
        next(rows)  # first resumption
        next(rows)  # second resumption
    assert _lines(result.record) == [
        [("_rows", _line_of("generator query")), (test, _line_of("first resumption"))],
        [("_rows", _line_of("generator after yield")), (test, _line_of("second resumption"))],
    ]


def _one_count() -> None:
    Book.objects.count()  # helper query


def _remembered(recorder: Any, function: Any) -> int:
    """How many frames of ``function`` the recorder's walk remembers."""
    return sum(entry[0].f_code is function.__code__ for entry in recorder.tails.values())


@pytest.mark.usefixtures("library")
def test_a_loop_of_calls_keeps_no_returned_frame_and_names_every_call() -> None:
    """Frames of calls that returned are forgotten by the next walk, not kept until a clear."""
    from querylens.capture import current_recorder

    test = "test_a_loop_of_calls_keeps_no_returned_frame_and_names_every_call"
    with recorded() as result:
        recorder = current_recorder()
        assert recorder is not None
        kept = []
        for _ in range(10):
            _one_count()  # loop call
            kept.append(_remembered(recorder, _one_count))
        Book.objects.exists()  # after the loop
        kept_after = _remembered(recorder, _one_count)
    # Each call's frame is remembered until the next walk passes its caller:
    # never more than the last one, and none once the caller queried itself.
    # Once its frames returned unused a few times, the helper is known to be
    # called once per row: its frames are not remembered any more.
    assert max(kept) <= 1
    assert kept[-1] == 0
    assert kept_after == 0
    expected = [[("_one_count", _line_of("helper query")), (test, _line_of("loop call"))]] * 10
    assert _lines(result.record) == [*expected, [(test, _line_of("after the loop"))]]


def _two_counts() -> None:
    Book.objects.count()  # first of two
    Book.objects.exists()  # second of two


@pytest.mark.usefixtures("library")
def test_a_helper_whose_frame_a_later_query_stops_at_stays_remembered() -> None:
    """A frame that serves a second query is worth remembering: its code never turns transient."""
    from querylens.capture import TRANSIENT_AFTER, current_recorder

    test = "test_a_helper_whose_frame_a_later_query_stops_at_stays_remembered"
    with recorded() as result:
        recorder = current_recorder()
        assert recorder is not None
        for _ in range(TRANSIENT_AFTER + 3):
            _two_counts()  # helper call
        # The last call's frame: still remembered, as every call's was.
        kept = _remembered(recorder, _two_counts)
    assert kept == 1
    call = (test, _line_of("helper call"))
    expected = [
        [("_two_counts", _line_of("first of two")), call],
        [("_two_counts", _line_of("second of two")), call],
    ] * (TRANSIENT_AFTER + 3)
    assert _lines(result.record) == expected


@pytest.mark.usefixtures("library")
def test_inside_a_recording_relations_and_columns_read_as_django_reads_them() -> None:
    """The hooks answer cached relations and loaded columns themselves: what Django would."""
    from django.db.models.fields.related_descriptors import ForwardManyToOneDescriptor

    from tests.models import Author

    with recorded() as result:
        book = Book.objects.select_related("author").first()
        assert book is not None
        author = book.author
        # Hooked while recording: these reads went through querylens's code.
        assert hasattr(ForwardManyToOneDescriptor.__get__, "__wrapped__")
        assert book.author is author
        assert book.author_id == author.pk
        assert book.author.name == author.name
        count_after_cached_reads = result.recorder.count
        # A cached None on a required relation raises, as Django's own code does.
        book._state.fields_cache["author"] = None
        with pytest.raises(Book.author.RelatedObjectDoesNotExist):
            book.author  # noqa: B018
        # A nullable relation cached as None is None, with no query.
        lone = Author.objects.create(name="Nobody's", publisher=None)
        assert lone.publisher is None
        # Not cached: loaded by Django, and named.
        fresh = Book.objects.only("title").get(pk=book.pk)
        assert fresh.author.pk == author.pk
    assert count_after_cached_reads == 1
    # The first book, the new author, the book with only its title; then
    # its deferred author_id column and its author, both loaded on access.
    relations = [q.relation for q in result.record.queries]
    assert relations == [None, None, None, "tests.Book.author", "tests.Book.author"]


def _count_publishers(sender: object, **kwargs: object) -> None:
    from tests.models import Publisher

    Publisher.objects.count()  # receiver query


@pytest.mark.usefixtures("library")
def test_a_relation_load_is_named_by_its_read_and_a_receiver_inside_it_by_its_own_line() -> None:
    """A lazy load's query takes the line that read the relation (its walk
    starts there); a query a ``post_init`` receiver runs inside the same load
    takes the receiver's line, as any other query does."""
    from django.db.models.signals import post_init

    from tests.models import Author

    test = "test_a_relation_load_is_named_by_its_read_and_a_receiver_inside_it_by_its_own_line"
    post_init.connect(_count_publishers, sender=Author)
    try:
        with recorded() as result:
            for book in Book.objects.order_by("pk")[:3]:  # the books
                _ = book.author  # the relation read
    finally:
        post_init.disconnect(_count_publishers, sender=Author)
    per_book = [
        [(test, _line_of("the relation read"))],
        [("_count_publishers", _line_of("receiver query")), (test, _line_of("the relation read"))],
    ]
    assert _lines(result.record) == [[(test, _line_of("the books"))], *per_book * 3]
    assert [q.relation for q in result.record.queries][1:3] == ["tests.Book.author"] * 2
    # Two loops, each at its own line: the authors' loads, the receiver's counts.
    sites = sorted(
        (g.callsite.function, g.callsite.line, "COUNT" in g.sample_sql)
        for g in result.record.n_plus_one
        if g.callsite is not None
    )
    assert sites == sorted(
        [
            (test, _line_of("the relation read"), False),
            ("_count_publishers", _line_of("receiver query"), True),
        ]
    )


def _raw_select() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")  # raw cursor line


@pytest.mark.usefixtures("library")
def test_a_raw_cursor_query_is_named_by_its_line_however_the_cursor_is_wrapped() -> None:
    """The walk skips Django's cursor frames: first wrapper, behind another, debug cursor."""

    def other(execute, sql, params, many, context):  # type: ignore[no-untyped-def]
        return execute(sql, params, many, context)  # the project's own wrapper

    test = "test_a_raw_cursor_query_is_named_by_its_line_however_the_cursor_is_wrapped"
    with recorded() as result:
        _raw_select()  # ours first
        connection.execute_wrappers.insert(0, other)
        try:
            _raw_select()  # another wrapper first
        finally:
            connection.execute_wrappers.remove(other)
        connection.force_debug_cursor = True
        try:
            _raw_select()  # debug cursor
        finally:
            connection.force_debug_cursor = False
    raw = ("_raw_select", _line_of("raw cursor line"))
    assert _lines(result.record) == [
        [raw, (test, _line_of("ours first"))],
        # A wrapper of the project's is a frame of the project's, like any other.
        [
            ("other", _line_of("the project's own wrapper")),
            raw,
            (test, _line_of("another wrapper first")),
        ],
        [raw, (test, _line_of("debug cursor"))],
    ]
