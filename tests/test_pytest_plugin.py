"""The pytest plugin, run as a team would: pytest on a small project, in a subprocess.

The sample project has a shop app (authors and books), a view with an N+1 and
tests that run N+1s in their body, through the test client, in an async test
and in a unittest-style TestCase.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

pytest_plugins = ["pytester"]

SETTINGS = """
SECRET_KEY = "sample"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "querylens",
    "shop",
]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
MIDDLEWARE = ["querylens.middleware.QueryLensMiddleware"]
ROOT_URLCONF = "sample_urls"
QUERYLENS = {"HEADERS": "always", "ALLOW": ALLOW}
"""

MODELS = """
from django.db import models


class Author(models.Model):
    name = models.CharField(max_length=50)


class Book(models.Model):
    title = models.CharField(max_length=50)
    author = models.ForeignKey(Author, models.CASCADE, related_name="books")
"""

VIEWS = """
from django.http import HttpResponse

from shop.models import Book


def book_list(request):
    names = [book.author.name for book in Book.objects.all()]
    return HttpResponse(", ".join(names))
"""

URLS = """
from django.urls import path

from shop import views

urlpatterns = [path("books/", views.book_list)]
"""

CONFTEST = """
import pytest

from shop.models import Author, Book


@pytest.fixture
def books(db):
    for number in range(3):
        author = Author.objects.create(name=f"author {number}")
        Book.objects.create(title=f"book {number}", author=author)


@pytest.fixture
def books_async(transactional_db):
    for number in range(3):
        author = Author.objects.create(name=f"async {number}")
        Book.objects.create(title=f"async {number}", author=author)
"""

TEST_LOOP = """
from shop.models import Book


def test_titles_and_authors(books):
    {padding}names = [book.author.name for book in Book.objects.{queryset}]
    assert len(names) == 3
"""

TEST_OTHERS = """
import pytest
from django.test import TestCase

from shop.models import Author, Book


def test_page(books, client):
    assert client.get("/books/").status_code == 200


def test_clean(books):
    assert len([book.author.name for book in Book.objects.select_related("author")]) == 3


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_async_loop(books_async):
    names = [(await Author.objects.aget(pk=book.author_id)).name async for book in Book.objects.all()]
    assert len(names) == 3


class BookTests(TestCase):
    @classmethod
    def setUpTestData(cls):
        for number in range(3):
            Book.objects.create(title=str(number), author=Author.objects.create(name=str(number)))

    def test_unittest_loop(self):
        self.assertEqual(len([book.author.name for book in Book.objects.all()]), 3)
"""


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    # The sample project's settings, not this suite's.
    monkeypatch.delenv("DJANGO_SETTINGS_MODULE", raising=False)
    write_settings(pytester, allow=[])
    pytester.mkpydir("shop")
    (pytester.path / "shop" / "models.py").write_text(MODELS)
    (pytester.path / "shop" / "views.py").write_text(VIEWS)
    pytester.makepyfile(sample_urls=URLS, conftest=CONFTEST, test_others=TEST_OTHERS)
    write_loop(pytester)
    return pytester


def write_settings(pytester: pytest.Pytester, allow: list[dict[str, str]]) -> None:
    (pytester.path / "sample_settings.py").write_text(f"ALLOW = {allow!r}\n" + SETTINGS)


def write_loop(pytester: pytest.Pytester, *, blank_lines: int = 0, fixed: bool = False) -> None:
    queryset = 'select_related("author")' if fixed else "all()"
    padding = "\n" * blank_lines + "    " if blank_lines else ""
    (pytester.path / "test_loop.py").write_text(
        TEST_LOOP.format(padding=padding, queryset=queryset)
    )


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(
        "-p", "pytest_django", "--ds=sample_settings", "--no-migrations", "-p", "no:cacheprovider",
        "-p", "no:randomly", *args,
    )  # fmt: skip


def baseline(pytester: pytest.Pytester) -> list[dict[str, Any]]:
    data = json.loads((pytester.path / "querylens-baseline.json").read_text())
    assert data["version"] == 1
    groups: list[dict[str, Any]] = data["groups"]
    return groups


def summary(result: pytest.RunResult) -> str:
    text = result.stdout.str()
    assert "querylens" in text
    return text[text.index("querylens ==") :]


LOOP_TEST = "test_loop.py::test_titles_and_authors"


def test_without_the_flag_the_plugin_does_nothing(project: pytest.Pytester) -> None:
    result = run(project)
    result.assert_outcomes(passed=5)
    assert "querylens ==" not in result.stdout.str()


def test_a_new_n_plus_one_fails_with_its_call_site_relation_and_fix(
    project: pytest.Pytester,
) -> None:
    result = run(project, "--querylens")
    # The loop in a test body, the view behind the test client, the async
    # loop and the unittest-style test; the select_related twin passes.
    result.assert_outcomes(passed=1, failed=4)
    out = result.stdout.str()
    assert re.search(r"3 x 'SELECT .*' at test_loop\.py:\d+ via shop\.Book\.author; "
                     r'fix: select_related\("author"\)', out)  # fmt: skip
    assert re.search(r"at shop/views\.py:\d+ via shop\.Book\.author", out)
    assert re.search(r"at test_others\.py:\d+; fix: in_bulk\(ids\)", out)
    assert "4 new N+1 group(s) (failed), 0 known" in summary(result)


def test_the_baseline_ratchet(project: pytest.Pytester) -> None:
    updated = run(project, "--querylens-update-baseline")
    updated.assert_outcomes(passed=5)
    groups = baseline(project)
    assert [group["test"] for group in groups] == sorted(group["test"] for group in groups)
    loop = next(group for group in groups if group["test"] == LOOP_TEST)
    assert loop["relation"] == "shop.Book.author"
    assert (loop["file"], loop["function"]) == ("test_loop.py", "test_titles_and_authors")
    assert loop["count"] == 3
    assert "line" not in loop
    assert loop["sample"].startswith("SELECT")

    run(project, "--querylens").assert_outcomes(passed=5)

    # Code moved down by blank lines: same key, still known.
    write_loop(project, blank_lines=4)
    moved = run(project, "--querylens")
    moved.assert_outcomes(passed=5)
    assert "0 new N+1 group(s) (failed), 4 known" in summary(moved)

    # A second, different N+1 fails; the known one still passes.
    (project.path / "test_more.py").write_text(
        "from shop.models import Author\n\n\n"
        "def test_reverse(books):\n"
        "    assert len([list(a.books.all()) for a in Author.objects.all()]) == 3\n"
    )
    second = run(project, "--querylens")
    second.assert_outcomes(passed=5, failed=1)
    assert 'shop.Author.books; fix: prefetch_related("books")' in second.stdout.str()
    (project.path / "test_more.py").unlink()

    # The first N+1 fixed: its entry is stale, reported with the command to refresh.
    write_loop(project, fixed=True)
    fixed = run(project, "--querylens")
    fixed.assert_outcomes(passed=5)
    text = summary(fixed)
    assert "1 stale baseline entry" in text
    assert f"stale: {LOOP_TEST}: shop.Book.author at test_loop.py:test_titles_and_authors" in text
    assert "pytest --querylens --querylens-update-baseline" in text
    run(project, "--querylens-update-baseline").assert_outcomes(passed=5)
    assert LOOP_TEST not in [group["test"] for group in baseline(project)]


def test_allow_entries_silence_their_group_and_are_reported_when_unused(
    project: pytest.Pytester,
) -> None:
    write_settings(
        project,
        allow=[
            {"relation": "shop.Book.author", "reason": "three rows in tests"},
            {"callsite": "test_others.py:test_async_loop", "reason": "async demo"},
            {"relation": "shop.Nothing.here", "reason": "left over"},
        ],
    )
    result = run(project, "--querylens")
    result.assert_outcomes(passed=5)
    text = summary(result)
    assert "0 new N+1 group(s) (failed)" in text
    assert "stale allow entry (matched nothing in this run): relation='shop.Nothing.here'" in text
    assert "three rows in tests" not in text


def test_the_marker_sets_threshold_and_allow_for_one_test(project: pytest.Pytester) -> None:
    (project.path / "test_marked.py").write_text(
        "import pytest\n"
        "from shop.models import Book\n\n\n"
        "@pytest.mark.querylens(threshold=4)\n"
        "def test_under_threshold(books):\n"
        "    assert len([b.author.name for b in Book.objects.all()]) == 3\n\n\n"
        "@pytest.mark.querylens(allow=[{'relation': 'shop.Book.author', 'reason': 'tiny'}])\n"
        "def test_allowed(books):\n"
        "    assert len([b.author.name for b in Book.objects.all()]) == 3\n\n\n"
        "def test_fixture(books, querylens):\n"
        "    [b.author.name for b in Book.objects.all()]\n"
        "    record = querylens.record\n"
        "    assert record.query_count == 4\n"
        "    assert record.n_plus_one[0].relation == 'shop.Book.author'\n"
    )
    result = run(project, "--querylens", "test_marked.py")
    # The fixture's test has an N+1 too, and fails on it after its asserts passed.
    result.assert_outcomes(passed=2, failed=1)
    assert "test_marked.py::test_fixture FAILED" in result.stdout.str() or re.search(
        r"FAILED test_marked\.py::test_fixture", result.stdout.str()
    )


def test_the_ratchet_under_xdist(project: pytest.Pytester) -> None:
    run(project, "--querylens-update-baseline", "-n", "2").assert_outcomes(passed=5)
    parallel = baseline(project)
    (project.path / "querylens-baseline.json").unlink()
    run(project, "--querylens-update-baseline").assert_outcomes(passed=5)
    assert baseline(project) == parallel
    assert len(parallel) == 4

    known = run(project, "--querylens", "-n", "2")
    known.assert_outcomes(passed=5)
    assert "0 new N+1 group(s) (failed), 4 known" in summary(known)

    write_loop(project, fixed=True)
    (project.path / "test_more.py").write_text(
        "from shop.models import Author\n\n\n"
        "def test_reverse(books):\n"
        "    assert len([list(a.books.all()) for a in Author.objects.all()]) == 3\n"
    )
    changed = run(project, "--querylens", "-n", "2")
    changed.assert_outcomes(passed=5, failed=1)
    text = summary(changed)
    assert "1 new N+1 group(s) (failed), 3 known" in text
    assert f"stale: {LOOP_TEST}" in text


def test_an_unreadable_baseline_is_a_usage_error(project: pytest.Pytester) -> None:
    (project.path / "broken.json").write_text("{not json")
    result = run(project, "--querylens", "--querylens-baseline=broken.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "querylens: cannot read" in result.stderr.str()


def test_missing_baseline_means_zero_tolerance(project: pytest.Pytester, tmp_path: Path) -> None:
    result = run(project, "--querylens", f"--querylens-baseline={tmp_path / 'none.json'}")
    result.assert_outcomes(passed=1, failed=4)
