"""querylens: find slow, repeated and N+1 database queries in Django requests."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "assert_no_n_plus_one",
    "recording",
]

if TYPE_CHECKING:
    from querylens.capture import recording
    from querylens.testing import assert_no_n_plus_one


def __getattr__(name: str) -> Any:
    # Lazy so that importing querylens (for __version__, in settings) does not
    # import Django's ORM before settings are configured.
    if name == "recording":
        from querylens.capture import recording

        return recording
    if name == "assert_no_n_plus_one":
        from querylens.testing import assert_no_n_plus_one

        return assert_no_n_plus_one
    raise AttributeError(f"module 'querylens' has no attribute {name!r}")
