"""querylens on a Wagtail site: a CMS's code, not ours and not the project's.

``tests.wagtail_site.run`` sets a small Wagtail site up in a process of its
own (fresh SQLite file, 8 images, 6 pages), requests a project page that
renders each image with Wagtail's ``{% image %}`` tag, the same page with the
fix querylens suggests pasted, and Wagtail's own admin screens, then prints
the stored records.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("wagtail", reason="Wagtail is not installed (a test dependency)")

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
IMAGES = 8


@pytest.fixture(scope="module")
def visits(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    where = tmp_path_factory.mktemp("wagtail")
    (where / "media").mkdir()
    environ = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DJANGO_SETTINGS_MODULE": "tests.wagtail_site.settings",
        "QUERYLENS_WAGTAIL_DB": str(where / "db.sqlite3"),
        "QUERYLENS_WAGTAIL_MEDIA": str(where / "media"),
    }
    done = subprocess.run(
        [sys.executable, "-m", "tests.wagtail_site.run"],
        env=environ,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return {visit["label"]: visit["record"] for visit in json.loads(done.stdout)}


def groups(record: dict[str, Any]) -> list[dict[str, Any]]:
    return record["n_plus_one"]  # type: ignore[no-any-return]


def test_image_renditions_in_a_project_template_get_the_prefetch_wagtail_reads(
    visits: dict[str, dict[str, Any]],
) -> None:
    record = visits["gallery"]
    (group,) = groups(record)
    assert group["relation"] == "wagtailimages.Image.renditions"
    assert group["count"] == IMAGES
    # The loop is the project's template; the filter() per image is Wagtail's.
    assert group["callsite"] == {"file": "gallery.html", "line": 3, "function": "<template>"}
    # Not a Prefetch(to_attr=...) that Wagtail would never read.
    assert group["suggestion"] == 'prefetch_related("renditions")'
    assert "prefetched renditions first" in group["note"]

    fixed = visits["gallery-fixed"]
    assert groups(fixed) == []
    assert fixed["query_count"] == record["query_count"] - IMAGES + 1


def test_renditions_made_on_first_view_are_writes_with_no_fix_to_paste(
    visits: dict[str, dict[str, Any]],
) -> None:
    writes = [g for g in groups(visits["gallery-cold"]) if g["sample_sql"].startswith("INSERT")]
    (group,) = writes
    assert group["count"] == IMAGES
    assert group["callsite"]["file"] == "gallery.html"
    assert group["suggestion"] is None  # no bulk_create() can go in a template
    assert "template" in group["note"]


def test_wagtails_admin_screens_name_the_package_and_no_false_n_plus_one(
    visits: dict[str, dict[str, Any]],
) -> None:
    # The page explorer, the image editor and the dashboard: no loop.
    for label in ("admin-explorer", "admin-image-edit", "admin-home"):
        assert groups(visits[label]) == [], label
    # The image listing makes each thumbnail's rendition, inside Wagtail.
    listing = groups(visits["admin-images"])
    assert listing
    for group in listing:
        assert group["callsite"] is None
        assert group["package"] == "wagtail"
        if group["sample_sql"].startswith("INSERT"):
            assert group["suggestion"] is None


def test_the_hotspots_put_the_projects_own_work_first(
    visits: dict[str, dict[str, Any]],
) -> None:
    from querylens.hotspots import build_report
    from querylens.records import RequestRecord

    report = build_report(RequestRecord.from_dict(record) for record in visits.values())
    project = report.project_n_plus_one
    packages = report.package_n_plus_one
    assert project
    assert all(spot.callsite is not None for spot in project)
    assert {spot.package for spot in packages} == {"wagtail"}
    ranking = report.ranking
    first_package = next(i for i, spot in enumerate(ranking) if not spot.in_project)
    assert all(spot.in_project for spot in ranking[:first_package])
    assert not any(spot.in_project for spot in ranking[first_package:])
