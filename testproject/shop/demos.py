"""The catalogue of demo pages: what each one shows and what querylens should say.

One list drives the index page and the blurb at the top of every page, so a page and
its description cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.urls import reverse

N_PLUS_ONE = "N+1"
CLEAN = "clean"
DUPLICATES = "duplicates"
_BADGE_CLASSES = {N_PLUS_ONE: "n-plus-one", CLEAN: "clean", DUPLICATES: "duplicates"}


@dataclass(frozen=True)
class Demo:
    url_name: str  # name in the "shop" URL namespace
    title: str
    summary: str  # one sentence: what this page demonstrates
    expected: str  # N_PLUS_ONE, CLEAN or DUPLICATES
    twin: str | None = None  # url_name of the page with the opposite behaviour
    hint: str = ""  # what querylens should report (relation and suggested fix)

    @property
    def badge_class(self) -> str:
        return _BADGE_CLASSES[self.expected]

    @property
    def url(self) -> str:
        return reverse(f"shop:{self.url_name}")

    @property
    def twin_url(self) -> str:
        return reverse(f"shop:{self.twin}") if self.twin else ""


def _pair(
    url_name: str,
    title: str,
    bad: str,
    good: str,
    hint: str,
) -> tuple[Demo, Demo]:
    """An N+1 page and its fixed twin, each linking to the other."""
    fixed = f"{url_name}_fixed"
    return (
        Demo(url_name, title, bad, N_PLUS_ONE, fixed, hint),
        Demo(fixed, f"{title}, fixed", good, CLEAN, url_name),
    )


DEMOS: tuple[Demo, ...] = (
    *_pair(
        "book_list",
        "Books and their authors (template)",
        "The template prints {{ book.author.name }}, so every book loads its author "
        "with one more query.",
        'select_related("author") fetches every book with its author in one query.',
        'shop.Book.author → select_related("author")',
    ),
    *_pair(
        "book_loop",
        "Books and their authors (view loop)",
        "The view reads book.author.name in a Python loop, one query per book.",
        'The same loop over select_related("author") runs a single query.',
        'shop.Book.author → select_related("author")',
    ),
    *_pair(
        "author_books",
        "Authors and their books",
        "The template loops over author.books.all, one query per author (reverse foreign key).",
        'prefetch_related("books") loads every author\'s books in one extra query.',
        'shop.Author.books → prefetch_related("books")',
    ),
    *_pair(
        "book_tags",
        "Books and their tags",
        "The template loops over book.tags.all, one query per book (many-to-many).",
        'prefetch_related("tags") loads all the tags in one extra query.',
        'shop.Book.tags → prefetch_related("tags")',
    ),
    *_pair(
        "author_profiles",
        "Authors and their profiles",
        "The template prints author.profile.bio, one query per author (reverse one-to-one).",
        'select_related("profile") joins the profiles into the author query.',
        'shop.Author.profile → select_related("profile")',
    ),
    *_pair(
        "author_publishers",
        "Authors, their books and publishers",
        "A nested loop: one query per author for the books, then one per book for its publisher.",
        'prefetch_related("books__publisher") loads both levels in two extra queries.',
        'shop.Author.books, shop.Book.publisher → prefetch_related("books__publisher")',
    ),
    *_pair(
        "book_picks",
        "Staff picks by id",
        "The view calls Book.objects.get(pk=...) for each picked id.",
        "in_bulk(ids) loads every pick in one query.",
        "no relation → in_bulk(ids) / filter(pk__in=ids)",
    ),
    *_pair(
        "author_counts",
        "Authors and how many books they wrote",
        "The view calls author.books.count() for each author.",
        'annotate(n=Count("books")) counts in the author query itself.',
        'shop.Author.books → annotate(n=Count("books"))',
    ),
    *_pair(
        "async_books",
        "Books and their authors (async view)",
        "An async view awaits Author.objects.aget() for each book it iterates.",
        'async for over select_related("author") needs one query.',
        'no relation → select_related("author") / in_bulk(ids)',
    ),
    *_pair(
        "raw_books",
        "Books and their authors (raw SQL)",
        "The view runs a raw SELECT on a cursor for each book's author.",
        "A single raw query joins the authors in.",
        "no relation → one JOIN instead of a query per row",
    ),
    *_pair(
        "book_comments",
        "Books and their comments",
        "The template loops over book.comments.all, one query per book (generic relation).",
        'prefetch_related("comments") loads every comment in one extra query.',
        'shop.Book.comments → prefetch_related("comments")',
    ),
    Demo(
        "duplicates",
        "Duplicates, not an N+1",
        "The same two queries run from two different lines each: querylens counts "
        "them as duplicates, never as an N+1.",
        DUPLICATES,
        hint="2 duplicates, 0 N+1 groups",
    ),
    Demo(
        "clean",
        "A clean page",
        "A catalogue summary built from three distinct queries: nothing to report.",
        CLEAN,
        hint="0 duplicates, 0 N+1 groups",
    ),
)

DEMOS_BY_NAME: dict[str, Demo] = {demo.url_name: demo for demo in DEMOS}
