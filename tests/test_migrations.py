"""querylens ships the migrations its models need."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command


@pytest.mark.django_db
def test_no_migration_is_missing() -> None:
    out = StringIO()
    # Exits with status 1 (SystemExit) when a model change lacks a migration.
    call_command("makemigrations", "querylens", "--check", "--dry-run", stdout=out)
    assert "No changes detected" in out.getvalue()
