"""Placeholders that give querylens an entry in the admin's app list.

The admin builds its index and sidebar from registered models only, so two
unmanaged models without fields stand for the pages: no table is created
(``managed = False``). They carry querylens's permissions (see
``querylens.permissions``): a "view" permission each, and on the requests
page the stronger ``explain_query``. ``querylens.admin`` sends their
"change list" to the real pages.
"""

from __future__ import annotations

from django.db import models


class HotspotsPage(models.Model):
    class Meta:
        managed = False
        default_permissions = ("view",)
        verbose_name = "N+1 hotspots"
        verbose_name_plural = "N+1 hotspots"

    def __str__(self) -> str:
        return "N+1 hotspots"


class RequestsPage(models.Model):
    class Meta:
        managed = False
        default_permissions = ("view",)
        permissions = [("explain_query", "Can run EXPLAIN on recorded queries")]
        verbose_name = "recorded requests"
        verbose_name_plural = "recorded requests"

    def __str__(self) -> str:
        return "recorded requests"
