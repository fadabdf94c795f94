"""Sphinx configuration for the querylens documentation."""

from __future__ import annotations

import re
from pathlib import Path

_pyproject = (Path(__file__).resolve().parent.parent / "pyproject.toml").read_text()
_version = re.search(r'^version = "([^"]+)"', _pyproject, re.MULTILINE)

project = "querylens"
author = "querylens contributors"
copyright = "querylens contributors"
# One source of truth for the version: pyproject.toml.
release = _version.group(1) if _version else "unknown"
version = release

# myst_parser renders CHANGELOG.md (see changelog.md).
extensions = ["myst_parser"]
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
