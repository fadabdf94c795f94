"""A small Django REST framework API, shaped like a project's own."""

from __future__ import annotations

from typing import Any

from rest_framework import routers, serializers, viewsets

from tests.models import Author, Book


class AuthorSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    class Meta:
        model = Author
        fields = ["id", "name"]


class BookSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    author = AuthorSerializer()  # line: nested author
    publisher_name = serializers.CharField(source="publisher.name")  # line: dotted source

    class Meta:
        model = Book
        fields = ["id", "title", "author", "publisher_name", "tags"]  # line: book fields


class BookViewSet(viewsets.ReadOnlyModelViewSet):  # type: ignore[type-arg]
    queryset = Book.objects.order_by("pk")
    serializer_class = BookSerializer


class BookTitleSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    class Meta:
        model = Book
        fields = ["id", "title"]


class AuthorWithBooksSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    books = BookTitleSerializer(many=True, read_only=True)  # line: nested books
    book_count = serializers.SerializerMethodField()

    class Meta:
        model = Author
        fields = ["id", "name", "books", "book_count"]

    def get_book_count(self, author: Author) -> Any:
        return author.books.count()  # line: method field


class AuthorViewSet(viewsets.ReadOnlyModelViewSet):  # type: ignore[type-arg]
    queryset = Author.objects.order_by("pk")
    serializer_class = AuthorWithBooksSerializer


router = routers.DefaultRouter()
router.register("books", BookViewSet, basename="book")
router.register("authors", AuthorViewSet, basename="author")
