"""Fill the demo bookshop with a small, fixed catalogue.

Every value is derived from the tables below and the book's position in them, so two
runs produce the same data (and the same query counts on the demo pages).
"""

from __future__ import annotations

import datetime
from decimal import Decimal
from typing import Any

from django.contrib.contenttypes.models import ContentType
from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction

from shop.models import Author, Book, Comment, Profile, Publisher, Review, Tag

PUBLISHERS = [
    "Harrow & Finch",
    "Lanternfield Press",
    "Blue Heron Books",
    "Quillmoor Editions",
    "Northgate House",
]

# (name, bio)
AUTHORS = [
    (
        "Ada Pemberton",
        "Former cartographer who now writes quiet mysteries set on the Welsh coast.",
    ),
    (
        "Tomasz Ulvang",
        "Grew up between Gdańsk and Bergen; writes about ships and the people on them.",
    ),
    (
        "Mireille Castan",
        "Historian of the Languedoc whose novels keep slipping into the archives.",
    ),
    (
        "Kofi Asante-Bright",
        "Engineer turned science-fiction writer, fond of very long bridges.",
    ),
    (
        "Ingrid Solberg-Hale",
        "Poet and translator; walks a different mountain every summer.",
    ),
    (
        "Rafael Oyarzún",
        "Chef from Valparaíso who writes cookbooks as if they were travelogues.",
    ),
    ("Hana Takamori", "Biographer of forgotten inventors and their patient families."),
    (
        "Duncan Mercer-Lyle",
        "Retired detective sergeant; his crime novels are suspiciously precise.",
    ),
    (
        "Priya Vellankar",
        "Botanist who writes about rivers, seeds and the people who map them.",
    ),
    (
        "Oskar Brenneman",
        "Writes young-adult adventures from a converted railway carriage.",
    ),
    (
        "Leila Haddadi",
        "Journalist whose essays follow spice routes and forgotten trade towns.",
    ),
    (
        "Cormac Twohey",
        "Lighthouse keeper's son; writes ghost stories and very short poems.",
    ),
]

TAGS = [
    "Biography",
    "Cooking",
    "Fiction",
    "History",
    "Mystery",
    "Nature",
    "Poetry",
    "Science fiction",
    "Travel",
    "Young adult",
]

# (title, tags): one to three tags each.
BOOKS = [
    ("The Cartographer's Tide", ["Mystery", "Fiction"]),
    ("Salt Road to Samarkand", ["Travel", "History"]),
    ("A Bridge Over the Kármán Line", ["Science fiction"]),
    ("Winter Ledger", ["Poetry"]),
    ("Forty Kitchens of the Pacific", ["Cooking", "Travel"]),
    ("The Patent Clerk's Wife", ["Biography", "History"]),
    ("Low Water at Porthgain", ["Mystery"]),
    ("Seeds of the Godavari", ["Nature", "Travel"]),
    ("The Railway Carriage Gang", ["Young adult", "Fiction"]),
    ("Cardamom and Copper", ["Travel", "History", "Cooking"]),
    ("The Lamp Room", ["Fiction", "Poetry"]),
    ("Harbourmaster's Daughter", ["Fiction", "History"]),
    ("Notes from the Archive at Albi", ["History"]),
    ("Orbital Gardens", ["Science fiction", "Nature"]),
    ("Small Hours in the Fjord", ["Poetry", "Nature"]),
    ("Bread Without Borders", ["Cooking"]),
    ("The Inventor of Quiet Engines", ["Biography"]),
    ("A Case of Missing Tides", ["Mystery", "Fiction"]),
    ("River Mapmakers", ["Nature", "History"]),
    ("The Summer We Stole a Lighthouse", ["Young adult", "Mystery"]),
    ("Caravanserai", ["Travel", "History", "Fiction"]),
    ("Tidewrack", ["Fiction", "Mystery"]),
    ("The Long Span", ["Science fiction", "Fiction"]),
    ("Cathar Winter", ["History", "Fiction"]),
    ("Ninety Knots", ["Fiction", "Travel"]),
    ("A Pantry by the Sea", ["Cooking", "Nature"]),
    ("Letters to a Lens Grinder", ["Biography", "History"]),
    ("Second Statement", ["Mystery"]),
    ("The Monsoon Herbarium", ["Nature", "Biography"]),
    ("Platform Nine Runaways", ["Young adult"]),
    ("Pepper Towns", ["Travel", "History"]),
    ("Fog Signals", ["Poetry", "Fiction"]),
    ("The Ballast Ghost", ["Fiction", "Young adult"]),
    ("Red Clay, Blue Glaze", ["History", "Biography"]),
    ("The Relay Stations", ["Science fiction"]),
    ("Stone Paths of Jotunheimen", ["Travel", "Nature", "Poetry"]),
    ("Sunday Lunch in Valparaíso", ["Cooking", "Travel"]),
    ("A Clockmaker's Apprentice", ["Biography", "Young adult"]),
    ("The Quiet Witness", ["Mystery", "Fiction"]),
    ("Deltas", ["Nature"]),
]

REVIEW_TEXTS = [
    "Read it in one sitting on a train and missed my stop.",
    "Beautifully written, if a little slow in the middle.",
    "Bought it as a gift and ended up reading it first.",
    "The ending surprised me, and I rarely say that.",
    "Solid, careful and quietly funny.",
    "Not for me, but I can see why others love it.",
    "I have already recommended it to three friends.",
    "The best chapter is the one about the weather.",
]
RATINGS = [5, 4, 4, 3, 5, 2, 4, 5, 3, 4, 5]

COMMENTERS = ["Margo", "Ibrahim", "Sunniva", "Theo", "Lucía", "Wen", "Declan"]
COMMENT_TEXTS = [
    "Is there a sequel planned?",
    "Our book club picked this for March.",
    "The paperback cover is much nicer than the hardback.",
    "Anyone know if there is an audiobook?",
    "Signed copies at the shop last week, they went fast.",
]


class Command(BaseCommand):
    help = "Fill the demo bookshop with a fixed catalogue (does nothing if data exists)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--reset",
            action="store_true",
            help="Delete the existing shop data first, then seed again.",
        )

    def handle(self, *args: Any, reset: bool = False, **options: Any) -> None:
        with transaction.atomic():
            if reset:
                self._delete_all()
            elif Publisher.objects.exists() or Book.objects.exists():
                self.stdout.write("Demo data already present; use --reset to recreate it.")
                return
            self._seed()
        counts = ", ".join(
            f"{model.objects.count()} {model._meta.verbose_name_plural}"
            for model in (Publisher, Author, Tag, Book, Review, Comment)
        )
        self.stdout.write(self.style.SUCCESS(f"Seeded {counts}."))

    def _delete_all(self) -> None:
        # Children first: Book.publisher is PROTECTed, and generic comments have no
        # cascade from their targets.
        Comment.objects.all().delete()
        Review.objects.all().delete()
        Book.objects.all().delete()
        Tag.objects.all().delete()
        Profile.objects.all().delete()
        Author.objects.all().delete()
        Publisher.objects.all().delete()

    def _seed(self) -> None:
        publishers = [Publisher.objects.create(name=name) for name in PUBLISHERS]
        authors = []
        for name, bio in AUTHORS:
            author = Author.objects.create(name=name)
            Profile.objects.create(author=author, bio=bio)
            authors.append(author)
        tags = {name: Tag.objects.create(name=name) for name in TAGS}

        books = []
        for i, (title, tag_names) in enumerate(BOOKS):
            book = Book.objects.create(
                title=title,
                author=authors[i % len(authors)],
                publisher=publishers[(i * 3) % len(publishers)],
                published=datetime.date(1996 + (i * 7) % 29, 1 + (i * 5) % 12, 1 + (i * 11) % 28),
                price=Decimal(9 + (i * 37) % 22) + Decimal("0.99"),
            )
            book.tags.set([tags[name] for name in tag_names])
            books.append(book)

        Review.objects.bulk_create(
            Review(
                book=book,
                rating=RATINGS[(i * 2 + k) % len(RATINGS)],
                text=REVIEW_TEXTS[(i + k * 3) % len(REVIEW_TEXTS)],
            )
            for i, book in enumerate(books)
            for k in range(2)
        )

        # A few comments on books and, to show the relation is generic, on authors.
        book_type = ContentType.objects.get_for_model(Book)
        author_type = ContentType.objects.get_for_model(Author)
        comments = [
            Comment(
                content_type=book_type,
                object_id=books[(n * 7) % len(books)].pk,
                name=COMMENTERS[n % len(COMMENTERS)],
                text=COMMENT_TEXTS[n % len(COMMENT_TEXTS)],
            )
            for n in range(10)
        ]
        comments += [
            Comment(
                content_type=author_type,
                object_id=authors[n * 5].pk,
                name=COMMENTERS[(n + 3) % len(COMMENTERS)],
                text="Will there be a reading in town this year?",
            )
            for n in range(2)
        ]
        Comment.objects.bulk_create(comments)
