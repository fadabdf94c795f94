"""Who may read recorded traffic, and who may run EXPLAIN.

The pages show other users' requests (their SQL and parameters), so being
staff is not enough: a user needs querylens's permissions, granted to users
or groups in the admin like any other (superusers have them all).

=================================  =============================================
permission                         opens
=================================  =============================================
``querylens.view_hotspotspage``    the hotspots page and its JSON
``querylens.view_requestspage``    the requests list, one request, its JSON
``querylens.explain_query``        EXPLAIN (ANALYZE), which runs SQL; also needs
                                   ``view_requestspage``
=================================  =============================================
"""

from __future__ import annotations

from typing import Any

VIEW_HOTSPOTS = "querylens.view_hotspotspage"
VIEW_REQUESTS = "querylens.view_requestspage"
EXPLAIN = "querylens.explain_query"

#: What each permission needs besides itself.
_IMPLIES: dict[str, tuple[str, ...]] = {EXPLAIN: (VIEW_REQUESTS, EXPLAIN)}


def allowed(user: Any, permission: str) -> bool:
    """Whether ``user`` is active staff with ``permission`` (and what it needs)."""
    if user is None or not getattr(user, "is_authenticated", False):
        return False
    if not (user.is_active and user.is_staff):
        return False
    return bool(user.has_perms(_IMPLIES.get(permission, (permission,))))
