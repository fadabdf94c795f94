"""Recording outside requests: management commands and Django's tasks.

Off by default; ``QUERYLENS["RECORD_OUTSIDE_REQUESTS"] = True`` turns it on.
Each command run and each task run becomes a record in the same buffer as
the requests, named ``manage.py <command>`` or ``task <module.function>``,
so its N+1s show on the hotspots page.

* Tasks (Django 6.0's ``django.tasks``): receivers of its ``task_started``
  and ``task_finished`` signals, which the task backend sends around each
  run, in the same context. Connected always, they do nothing while the
  setting is off. No task queue is needed; Celery users connect the same two
  functions to ``task_prerun`` and ``task_postrun`` (see docs/commands.rst).
* Commands have no signals: ``install_command_hook()`` wraps
  ``BaseCommand.execute`` when the setting is on at start-up, and
  ``uninstall_command_hook()`` puts it back.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from querylens import lifecycle
from querylens.conf import conf

logger = logging.getLogger("querylens")

#: Commands never recorded: servers and shells run for as long as someone
#: works in them, and the rest are Django's own tooling.
SKIPPED_COMMANDS = frozenset(
    {
        "runserver",
        "runserver_plus",
        "testserver",
        "shell",
        "shell_plus",
        "dbshell",
        "test",
        "check",
        "migrate",
        "makemigrations",
        "squashmigrations",
        "sqlmigrate",
        "showmigrations",
        "collectstatic",
        "compilemessages",
        "makemessages",
        "createsuperuser",
        "changepassword",
        "querylens_benchmark",
    }
)

#: The recordings of running tasks, by task result id (one context each).
_tasks: ContextVar[dict[str, lifecycle.Recording] | None] = ContextVar(
    "querylens_tasks", default=None
)
_original_execute: Callable[..., Any] | None = None


def begin(name: str) -> lifecycle.Recording | None:
    """Start recording a unit of work outside a request (a task, a command)."""
    if not conf.RECORD_OUTSIDE_REQUESTS or lifecycle.skip_reason(name) is not None:
        return None
    try:
        return lifecycle.start()
    except Exception:
        logger.exception("querylens could not start recording %s", name)
        return None


def end(recording: lifecycle.Recording, *, kind: str, name: str, view: str | None) -> None:
    """Stop, analyse and store the recording of ``name``; never raises."""
    try:
        lifecycle.stop(recording)
        record = lifecycle.finish(recording, method=kind, path=name, view=view, reuse=False)
        lifecycle.store(record)
    except Exception:
        logger.exception("querylens could not finish recording %s", name)


# --- tasks ---------------------------------------------------------------------------------


def task_started(sender: Any = None, task_result: Any = None, **kwargs: Any) -> None:
    name = _task_name(task_result)
    recording = begin(name)
    if recording is None:
        return
    running = dict(_tasks.get() or {})
    running[str(getattr(task_result, "id", name))] = recording
    _tasks.set(running)


def task_finished(sender: Any = None, task_result: Any = None, **kwargs: Any) -> None:
    running = _tasks.get()
    if not running:
        return
    name = _task_name(task_result)
    recording = running.pop(str(getattr(task_result, "id", name)), None)
    if recording is not None:
        end(recording, kind="TASK", name=name, view=name.removeprefix("task "))


def _task_name(task_result: Any) -> str:
    task = getattr(task_result, "task", None)
    return f"task {getattr(task, 'module_path', None) or 'unknown'}"


def connect_task_signals() -> bool:
    """Connect the receivers to ``django.tasks`` (Django 6.0+); False without it."""
    try:
        from django.tasks import signals
    except ImportError:
        return False
    signals.task_started.connect(task_started, dispatch_uid="querylens.task_started")
    signals.task_finished.connect(task_finished, dispatch_uid="querylens.task_finished")
    return True


# --- management commands -------------------------------------------------------------------


def install_command_hook() -> None:
    """Record each management command's run (idempotent)."""
    global _original_execute
    from django.core.management.base import BaseCommand

    if _original_execute is not None:
        return
    original = BaseCommand.execute
    _original_execute = original

    @functools.wraps(original)
    def execute(self: BaseCommand, *args: Any, **options: Any) -> Any:
        command = type(self).__module__.rsplit(".", 1)[-1]
        if command in SKIPPED_COMMANDS:
            return original(self, *args, **options)
        name = f"manage.py {command}"
        recording = begin(name)
        if recording is None:
            return original(self, *args, **options)
        try:
            return original(self, *args, **options)
        finally:
            view = f"{type(self).__module__}.{type(self).__qualname__}"
            end(recording, kind="COMMAND", name=name, view=view)

    BaseCommand.execute = execute  # type: ignore[method-assign]


def uninstall_command_hook() -> None:
    """Put ``BaseCommand.execute`` back as it was."""
    global _original_execute
    from django.core.management.base import BaseCommand

    if _original_execute is not None:
        BaseCommand.execute = _original_execute  # type: ignore[method-assign]
        _original_execute = None
