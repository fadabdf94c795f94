"""Known, accepted N+1 groups: ``QUERYLENS["ALLOW"]`` and the pytest marker.

An entry matches a group by any of ``relation`` (``"shop.Book.author"``),
``callsite`` (``"shop/views.py:book_list"``: file and function, no line, so
moving code keeps it matching) and ``fingerprint``; every key it gives must
match. ``relation`` and ``callsite`` take shell-style wildcards
(``"shop.Book.*"``, ``"shop/admin.py:*"``). ``reason`` is required: an
allowed group stays visible, marked with it, and no longer counts as an N+1
in the headers or in test failures.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from querylens.conf import conf
from querylens.records import NPlusOneGroup

KEYS = frozenset({"relation", "callsite", "fingerprint", "reason"})
MATCHERS = ("relation", "callsite", "fingerprint")
_FINGERPRINT = re.compile(r"[0-9a-f]{4,64}\Z")
_CALLSITE = re.compile(r"[^:\s]+:[^:\s]+\Z")


@dataclass(frozen=True)
class AllowRule:
    """One allow entry: what it matches and why it is accepted."""

    reason: str
    relation: str | None = None
    callsite: str | None = None
    fingerprint: str | None = None

    def matches(self, group: NPlusOneGroup) -> bool:
        if self.relation is not None and not fnmatchcase(group.relation or "", self.relation):
            return False
        if self.callsite is not None:
            site = group.callsite
            where = f"{site.file}:{site.function}" if site is not None else ""
            if not fnmatchcase(where, self.callsite):
                return False
        return self.fingerprint is None or group.fingerprint == self.fingerprint

    def describe(self) -> str:
        parts = [f"{key}={getattr(self, key)!r}" for key in MATCHERS if getattr(self, key)]
        return ", ".join(parts)


def problems(entry: Any) -> list[str]:
    """What is wrong with one entry (empty when it is a valid rule)."""
    if not isinstance(entry, Mapping):
        return [f"is {type(entry).__name__}, not a dict"]
    found = []
    unknown = sorted(str(key) for key in entry if key not in KEYS)
    if unknown:
        found.append(f"has unknown key(s) {', '.join(map(repr, unknown))}")
    reason = entry.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        found.append("has no reason")
    if not any(entry.get(key) for key in MATCHERS):
        found.append("matches nothing (give relation, callsite or fingerprint)")
    for key in MATCHERS:
        value = entry.get(key)
        if value is not None and not isinstance(value, str):
            found.append(f"has a {key} that is not a string")
    callsite = entry.get("callsite")
    if isinstance(callsite, str) and not _CALLSITE.match(callsite):
        found.append(f"has callsite {callsite!r}, not 'file:function'")
    fingerprint = entry.get("fingerprint")
    if isinstance(fingerprint, str) and not _FINGERPRINT.match(fingerprint):
        found.append(f"has fingerprint {fingerprint!r}, not lower-case hex")
    return found


def rules(entries: Iterable[Any] | None) -> list[AllowRule]:
    """The valid entries as rules; invalid ones are left out (system checks name them)."""
    result = []
    for entry in entries or ():
        if problems(entry):
            continue
        result.append(
            AllowRule(
                reason=str(entry["reason"]).strip(),
                relation=entry.get("relation") or None,
                callsite=entry.get("callsite") or None,
                fingerprint=entry.get("fingerprint") or None,
            )
        )
    return result


def configured() -> list[AllowRule]:
    """The rules of ``QUERYLENS["ALLOW"]``."""
    return rules(conf.ALLOW)


def mark(groups: Sequence[NPlusOneGroup], allow: Sequence[AllowRule]) -> None:
    """Set ``allowed`` on each group the first matching rule accepts."""
    if not allow:
        return
    for group in groups:
        for rule in allow:
            if rule.matches(group):
                group.allowed = rule.reason
                break
