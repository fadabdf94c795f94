"""Management commands and tasks recorded into the buffer, when asked to."""

from __future__ import annotations

from collections.abc import Iterator
from io import StringIO
from typing import Any

import django
import pytest
from django.core.management import call_command

from querylens import outside_requests
from querylens.storage import get_storage
from tests.helpers import line_of

pytestmark = pytest.mark.usefixtures("library")


@pytest.fixture
def command_hook() -> Iterator[None]:
    outside_requests.install_command_hook()
    try:
        yield
    finally:
        outside_requests.uninstall_command_hook()


@pytest.mark.usefixtures("command_hook")
def test_a_command_is_recorded_with_its_n_plus_one(settings: Any) -> None:
    from tests.management.commands import books_report

    settings.QUERYLENS = {"RECORD_OUTSIDE_REQUESTS": True}
    out = StringIO()
    call_command("books_report", stdout=out)
    assert out.getvalue().count("\n") == 6  # the command ran as usual
    (record,) = get_storage().recent()
    assert (record.method, record.path) == ("COMMAND", "manage.py books_report")
    assert record.view == "tests.management.commands.books_report.Command"
    assert record.query_count == 7
    (group,) = record.n_plus_one
    assert group.relation == "tests.Book.author"
    assert group.suggestion == 'select_related("author")'
    assert group.callsite is not None
    assert group.callsite.line == line_of("command", books_report)


@pytest.mark.usefixtures("command_hook")
def test_commands_are_not_recorded_unless_asked(settings: Any) -> None:
    settings.QUERYLENS = {"RECORD_OUTSIDE_REQUESTS": False}
    call_command("books_report", stdout=StringIO())
    assert get_storage().recent() == []


@pytest.mark.usefixtures("command_hook")
def test_tooling_commands_are_never_recorded(settings: Any) -> None:
    settings.QUERYLENS = {"RECORD_OUTSIDE_REQUESTS": True}
    call_command("showmigrations", "tests", stdout=StringIO())
    assert get_storage().recent() == []


def test_the_hook_uninstalls() -> None:
    from django.core.management.base import BaseCommand

    before = BaseCommand.execute
    outside_requests.install_command_hook()
    assert BaseCommand.execute is not before
    outside_requests.uninstall_command_hook()
    assert BaseCommand.execute is before


@pytest.mark.skipif(django.VERSION < (6, 0), reason="django.tasks needs Django 6.0")
def test_a_task_is_recorded_with_its_n_plus_one(settings: Any) -> None:
    from tests.tasks import author_names

    settings.QUERYLENS = {"RECORD_OUTSIDE_REQUESTS": True}
    settings.TASKS = {"default": {"BACKEND": "django.tasks.backends.immediate.ImmediateBackend"}}
    result = author_names.enqueue()
    assert len(result.return_value) == 6
    (record,) = get_storage().recent()
    assert (record.method, record.path) == ("TASK", "task tests.tasks.author_names")
    (group,) = record.n_plus_one
    assert group.relation == "tests.Book.author"


@pytest.mark.skipif(django.VERSION < (6, 0), reason="django.tasks needs Django 6.0")
def test_tasks_are_not_recorded_unless_asked(settings: Any) -> None:
    from tests.tasks import author_names

    settings.TASKS = {"default": {"BACKEND": "django.tasks.backends.immediate.ImmediateBackend"}}
    author_names.enqueue()
    assert get_storage().recent() == []


def test_the_task_receivers_do_nothing_for_a_task_they_did_not_start() -> None:
    outside_requests.task_finished(task_result=None)
    assert get_storage().recent() == []


class StandInResult:
    """What a task backend (or the Celery recipe in the docs) hands the receivers."""

    def __init__(self, task_id: str, path: str) -> None:
        self.id = task_id
        self.task = type("Task", (), {"module_path": path})


def test_the_task_receivers_record_any_backends_runs(settings: Any) -> None:
    from querylens import capture
    from tests.models import Book

    settings.QUERYLENS = {"RECORD_OUTSIDE_REQUESTS": True}
    before = capture.current_recorder()  # a recorded test run has one
    run = StandInResult("t-1", "shop.tasks.send_digest")
    outside_requests.task_started(task_result=run)
    assert capture.current_recorder() is not None
    names = [book.author.name for book in Book.objects.order_by("pk")]
    outside_requests.task_finished(task_result=run)
    assert len(names) == 6
    (record,) = get_storage().recent()
    assert (record.method, record.path, record.view) == (
        "TASK",
        "task shop.tasks.send_digest",
        "shop.tasks.send_digest",
    )
    assert record.query_count == 7
    assert record.n_plus_one[0].relation == "tests.Book.author"
    # The task's recording ended with it.
    assert capture.current_recorder() is before


def test_a_failure_to_start_a_task_recording_leaves_the_task_alone(
    settings: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from querylens import lifecycle

    def explode(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("start bug")

    settings.QUERYLENS = {"RECORD_OUTSIDE_REQUESTS": True}
    monkeypatch.setattr(lifecycle, "start", explode)
    run = StandInResult("t-2", "shop.tasks.x")
    outside_requests.task_started(task_result=run)
    outside_requests.task_finished(task_result=run)
    assert get_storage().recent() == []
    assert "could not start recording task shop.tasks.x" in caplog.text
