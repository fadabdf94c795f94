"""Sphinx configuration for the querylens documentation."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import django

_root = Path(__file__).resolve().parent.parent
_init = (_root / "querylens" / "__init__.py").read_text()
_version = re.search(r'^__version__ = "([^"]+)"', _init, re.MULTILINE)

# autodoc imports querylens, whose helpers need Django configured.
sys.path.insert(0, str(_root))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
django.setup()

project = "querylens"
author = "querylens contributors"
copyright = "querylens contributors"
# One source of truth for the version: querylens.__version__ (pyproject reads it too).
release = _version.group(1) if _version else "unknown"
version = release

# myst_parser renders CHANGELOG.md (see changelog.md).
extensions = ["myst_parser", "sphinx.ext.autodoc"]
# Signatures without annotations: the text says what each takes and gives.
autodoc_typehints = "none"
autodoc_member_order = "bysource"
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]
root_doc = "index"
nitpicky = True

try:
    import furo  # noqa: F401
except ImportError:
    html_theme = "alabaster"
else:
    html_theme = "furo"
html_title = f"querylens {release}"
