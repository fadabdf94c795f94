"""Self-referencing relations: a chain of fixed length is not a loop; a walk up a tree is."""

from __future__ import annotations

import pytest

from querylens.testing import recorded
from tests.models import Category

pytestmark = pytest.mark.django_db


@pytest.fixture
def leaves() -> list[Category]:
    """Three leaves, each three levels under its own root."""
    found = []
    for number in range(3):
        root = Category.objects.create(name=f"root {number}")
        middle = Category.objects.create(name=f"middle {number}", parent=root)
        found.append(Category.objects.create(name=f"leaf {number}", parent=middle))
    return found


def test_a_chain_on_one_line_is_not_an_n_plus_one(leaves: list[Category]) -> None:
    leaf = Category.objects.get(pk=leaves[0].pk)
    with recorded() as result:
        name = leaf.parent.parent.name
    assert name == "root 0"
    assert result.record.query_count == 2
    assert result.record.n_plus_one == []


def test_a_chain_in_a_loop_gets_the_chained_select_related(leaves: list[Category]) -> None:
    with recorded() as result:
        names = [
            leaf.parent.parent.name for leaf in Category.objects.filter(name__startswith="leaf")
        ]
    assert sorted(names) == ["root 0", "root 1", "root 2"]
    # The first hop of each leaf is one group, the second another: the second
    # names the whole chain, whose fix also removes the first.
    groups = result.record.n_plus_one
    assert {group.relation for group in groups} == {"tests.Category.parent"}
    assert [group.suggestion for group in groups] == [
        'select_related("parent")',
        'select_related("parent__parent")',
    ]
    with recorded() as fixed:
        again = [
            leaf.parent.parent.name
            for leaf in Category.objects.filter(name__startswith="leaf").select_related(
                "parent__parent"
            )
        ]
    assert sorted(again) == sorted(names)
    assert fixed.record.n_plus_one == []
    assert fixed.record.query_count == 1 < result.record.query_count


def test_a_walk_up_a_tree_is_a_repetition_without_a_one_line_fix(leaves: list[Category]) -> None:
    node = Category.objects.get(pk=leaves[0].pk)
    with recorded() as result:
        path = [node.name]
        while node.parent_id:
            node = node.parent
            path.append(node.name)
    assert path == ["leaf 0", "middle 0", "root 0"]
    (group,) = result.record.n_plus_one
    assert group.count == 2
    assert group.relation == "tests.Category.parent"
    # select_related("parent") would not stop the walk: no one-line fix.
    assert group.suggestion is None
    assert group.note is not None
    assert "recursive" in group.note


def test_the_request_page_says_what_helps_a_walk(leaves: list[Category]) -> None:
    from django.test import Client

    from querylens.storage import get_storage
    from tests.helpers import querylens_staff

    node = Category.objects.get(pk=leaves[0].pk)
    with recorded() as result:
        while node.parent_id:
            node = node.parent
    record = result.record
    record.id = "treewalk0001"
    get_storage().add(record)
    client = Client()
    client.force_login(querylens_staff("reader"))
    page = client.get(f"/admin/querylens/requests/{record.id}/").content.decode()
    assert "recursive CTE" in page
    assert "select_related(&quot;parent&quot;)" not in page
