"""The admin of the test models, shaped like a project's own."""

from __future__ import annotations

from django.contrib import admin

from tests.models import Author, Book, Publisher, Review


@admin.register(Author)
class AuthorAdmin(admin.ModelAdmin):
    list_display = ("name",)
    search_fields = ("name",)


@admin.register(Book)
class BookAdmin(admin.ModelAdmin):
    list_display = ("title",)
    list_filter = ("publisher",)


@admin.register(Review)
class ReviewAdmin(admin.ModelAdmin):
    # Joins the book; Review.__str__ reads book.author, one level further.
    list_select_related = ("book",)


class BookInline(admin.TabularInline):
    model = Book
    fields = ("title", "author")
    extra = 0


@admin.register(Publisher)
class PublisherAdmin(admin.ModelAdmin):
    # Each inline form's author <select> runs the same query again.
    inlines = [BookInline]
