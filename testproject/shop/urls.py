from __future__ import annotations

from django.urls import path

from . import views

app_name = "shop"

urlpatterns = [
    path("", views.index, name="index"),
    path("books/", views.book_list, name="book_list"),
    path("books/fixed/", views.book_list_fixed, name="book_list_fixed"),
    path("books/loop/", views.book_loop, name="book_loop"),
    path("books/loop/fixed/", views.book_loop_fixed, name="book_loop_fixed"),
    path("authors/", views.author_books, name="author_books"),
    path("authors/fixed/", views.author_books_fixed, name="author_books_fixed"),
    path("books/tags/", views.book_tags, name="book_tags"),
    path("books/tags/fixed/", views.book_tags_fixed, name="book_tags_fixed"),
    path("authors/profiles/", views.author_profiles, name="author_profiles"),
    path(
        "authors/profiles/fixed/",
        views.author_profiles_fixed,
        name="author_profiles_fixed",
    ),
    path("authors/publishers/", views.author_publishers, name="author_publishers"),
    path(
        "authors/publishers/fixed/",
        views.author_publishers_fixed,
        name="author_publishers_fixed",
    ),
    path("books/by-id/", views.book_picks, name="book_picks"),
    path("books/by-id/fixed/", views.book_picks_fixed, name="book_picks_fixed"),
    path("authors/counts/", views.author_counts, name="author_counts"),
    path("authors/counts/fixed/", views.author_counts_fixed, name="author_counts_fixed"),
    path("async/books/", views.async_books, name="async_books"),
    path("async/books/fixed/", views.async_books_fixed, name="async_books_fixed"),
    path("raw/", views.raw_books, name="raw_books"),
    path("raw/fixed/", views.raw_books_fixed, name="raw_books_fixed"),
    path("books/comments/", views.book_comments, name="book_comments"),
    path("books/comments/fixed/", views.book_comments_fixed, name="book_comments_fixed"),
    path("duplicates/", views.duplicates, name="duplicates"),
    path("clean/", views.clean, name="clean"),
]
