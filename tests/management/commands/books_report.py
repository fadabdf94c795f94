"""A command with an N+1, as a team's reporting command often has."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from tests.models import Book


class Command(BaseCommand):
    help = "Print each book with its author."

    def handle(self, *args: Any, **options: Any) -> None:
        for book in Book.objects.order_by("pk"):
            self.stdout.write(f"{book.title}: {book.author.name}")  # line: command
