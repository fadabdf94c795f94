from __future__ import annotations

from django.contrib.contenttypes.fields import GenericForeignKey, GenericRelation
from django.contrib.contenttypes.models import ContentType
from django.db import models


class Publisher(models.Model):
    name = models.CharField(max_length=100)


class Author(models.Model):
    name = models.CharField(max_length=100)
    publisher = models.ForeignKey(Publisher, models.SET_NULL, null=True, related_name="authors")


class Profile(models.Model):
    author = models.OneToOneField(Author, models.CASCADE, related_name="profile")
    bio = models.CharField(max_length=200)


class Tag(models.Model):
    name = models.CharField(max_length=50)


class Book(models.Model):
    title = models.CharField(max_length=200)
    author = models.ForeignKey(Author, models.CASCADE, related_name="books")
    publisher = models.ForeignKey(Publisher, models.CASCADE, related_name="books")
    tags = models.ManyToManyField(Tag, related_name="books")
    comments = GenericRelation("Comment")


class Comment(models.Model):
    content_type = models.ForeignKey(ContentType, models.CASCADE)
    object_id = models.PositiveIntegerField()
    content_object = GenericForeignKey("content_type", "object_id")
    text = models.CharField(max_length=200)


class ApiKey(models.Model):
    """A token table of the project's own, found by its column name."""

    name = models.CharField(max_length=100)
    token = models.CharField(max_length=64, unique=True)


class Order(models.Model):
    """Big enough to make a planner prefer a full scan; no index but the key's."""

    status = models.CharField(max_length=20)
    created_at = models.DateTimeField()
    total = models.IntegerField()
    author = models.ForeignKey(Author, models.CASCADE, related_name="orders")


class Category(models.Model):
    """A tree: each category points at its parent."""

    name = models.CharField(max_length=50)
    parent = models.ForeignKey("self", models.CASCADE, null=True, related_name="children")


class Review(models.Model):
    """Shown in the admin by its ``__str__``, which reads two relations deep."""

    book = models.ForeignKey(Book, models.CASCADE, related_name="reviews")
    rating = models.IntegerField()

    def __str__(self) -> str:
        return f"{self.book.author.name}: {self.rating}"  # line: review str
