"""Admin for the demo data; list pages select their relations so they stay clean."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.contenttypes.admin import GenericTabularInline

from .models import Author, Book, Comment, Profile, Publisher, Review, Tag


@admin.register(Publisher)
class PublisherAdmin(admin.ModelAdmin):
    search_fields = ["name"]


class ProfileInline(admin.StackedInline):
    model = Profile


@admin.register(Author)
class AuthorAdmin(admin.ModelAdmin):
    search_fields = ["name"]
    inlines = [ProfileInline]


@admin.register(Tag)
class TagAdmin(admin.ModelAdmin):
    search_fields = ["name"]


class ReviewInline(admin.TabularInline):
    model = Review
    extra = 0


class CommentInline(GenericTabularInline):
    model = Comment
    extra = 0


@admin.register(Book)
class BookAdmin(admin.ModelAdmin):
    list_display = ["title", "author", "publisher", "published", "price"]
    list_select_related = ["author", "publisher"]
    list_filter = ["publisher", "tags"]
    search_fields = ["title", "author__name"]
    autocomplete_fields = ["author", "publisher", "tags"]
    inlines = [ReviewInline, CommentInline]


@admin.register(Review)
class ReviewAdmin(admin.ModelAdmin):
    list_display = ["book", "rating"]
    list_select_related = ["book"]
    list_filter = ["rating"]


@admin.register(Comment)
class CommentAdmin(admin.ModelAdmin):
    list_display = ["name", "content_type", "object_id"]
    list_select_related = ["content_type"]
