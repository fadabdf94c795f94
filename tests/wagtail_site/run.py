"""Set the Wagtail test site up, request its pages, print the records as JSON."""

from __future__ import annotations

import io
import json
import os
import sys

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.wagtail_site.settings")

IMAGES = 8
PAGES = 6


def setup() -> None:
    from django.contrib.auth import get_user_model
    from django.core.files.images import ImageFile
    from django.core.management import call_command
    from PIL import Image as PillowImage
    from wagtail.images import get_image_model
    from wagtail.models import Page

    call_command("migrate", verbosity=0)
    get_user_model().objects.create_superuser("admin", "admin@example.com", "x")
    for number in range(IMAGES):
        data = io.BytesIO()
        PillowImage.new("RGB", (160, 120), (number * 30 % 256, 80, 160)).save(data, "PNG")
        get_image_model().objects.create(
            title=f"Image {number}", file=ImageFile(data, name=f"image{number}.png")
        )
    root = Page.objects.get(depth=2)
    for number in range(PAGES):
        root.add_child(instance=Page(title=f"Page {number}", slug=f"page-{number}"))


def crawl() -> list[dict[str, object]]:
    from django.contrib.auth import get_user_model
    from django.core.cache import caches
    from django.test import Client
    from wagtail.images import get_image_model
    from wagtail.models import Page

    from querylens.storage import get_storage

    client = Client()
    visits: list[tuple[str, str]] = []

    def visit(label: str, url: str) -> None:
        response = client.get(url)
        assert response.status_code == 200, (url, response.status_code)
        visits.append((label, response["X-QueryLens-Request"]))

    visit("gallery-cold", "/gallery/")  # renditions made on first view
    caches["default"].clear()  # Wagtail caches renditions: look them up again
    visit("gallery", "/gallery/")
    caches["default"].clear()
    visit("gallery-fixed", "/gallery-fixed/")
    client.force_login(get_user_model().objects.get(username="admin"))
    root = Page.objects.get(depth=2)
    visit("admin-explorer", f"/admin/pages/{root.pk}/")
    visit("admin-images", "/admin/images/")
    image = get_image_model().objects.order_by("pk").first()
    visit("admin-image-edit", f"/admin/images/{image.pk}/")
    visit("admin-home", "/admin/")
    storage = get_storage()
    return [
        {"label": label, "record": storage.get(request_id).to_dict()}  # type: ignore[union-attr]
        for label, request_id in visits
    ]


def main() -> None:
    import django

    django.setup()
    setup()
    json.dump(crawl(), sys.stdout)


if __name__ == "__main__":
    main()
