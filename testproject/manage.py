#!/usr/bin/env python
"""Command-line entry point for the querylens demo project."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def main() -> None:
    # Run the demo against the querylens in this checkout even when the package is
    # not installed, so a fresh clone works with nothing but Django on the path.
    repo_root = Path(__file__).resolve().parent.parent
    if str(repo_root) not in sys.path:
        sys.path.insert(1, str(repo_root))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testproject.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
