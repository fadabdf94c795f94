"""The admin of the test models, shaped like a project's own."""

from __future__ import annotations

from django.contrib import admin

from tests.models import Author, Book


@admin.register(Author)
class AuthorAdmin(admin.ModelAdmin):
    list_display = ("name",)
    search_fields = ("name",)


@admin.register(Book)
class BookAdmin(admin.ModelAdmin):
    list_display = ("title",)
    list_filter = ("publisher",)
