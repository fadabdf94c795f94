"""querylens: find slow, repeated and N+1 database queries in Django requests.

The public API is what ``__all__`` lists and docs/api.rst documents; every
other module and name is private and may change without notice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "CallSite",
    "DuplicateGroup",
    "NPlusOneGroup",
    "QueryLensTestCaseMixin",
    "QueryRecord",
    "RequestRecord",
    "__version__",
    "assert_no_n_plus_one",
    "paused",
    "recorded",
]

if TYPE_CHECKING:
    from querylens.capture import paused
    from querylens.records import (
        CallSite,
        DuplicateGroup,
        NPlusOneGroup,
        QueryRecord,
        RequestRecord,
    )
    from querylens.testing import QueryLensTestCaseMixin, assert_no_n_plus_one, recorded

#: Where each public name lives. Imported on first use, so that importing
#: querylens (for __version__, in settings) does not import Django's ORM
#: before settings are configured.
_HOMES = {
    "paused": "querylens.capture",
    "CallSite": "querylens.records",
    "DuplicateGroup": "querylens.records",
    "NPlusOneGroup": "querylens.records",
    "QueryRecord": "querylens.records",
    "RequestRecord": "querylens.records",
    "QueryLensTestCaseMixin": "querylens.testing",
    "assert_no_n_plus_one": "querylens.testing",
    "recorded": "querylens.testing",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'querylens' has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(home), name)


def __dir__() -> list[str]:
    return sorted(__all__)
