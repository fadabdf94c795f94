"""A task with an N+1 (Django 6.0's django.tasks; imported by tests only there)."""

from __future__ import annotations

from django.tasks import task

from tests.models import Book


@task
def author_names() -> list[str]:
    return [book.author.name for book in Book.objects.order_by("pk")]
