from __future__ import annotations

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("querylens", "0001_initial")]

    operations = [
        migrations.AlterModelOptions(
            name="hotspotspage",
            options={
                "default_permissions": ("view",),
                "managed": False,
                "verbose_name": "N+1 hotspots",
                "verbose_name_plural": "N+1 hotspots",
            },
        ),
        migrations.AlterModelOptions(
            name="requestspage",
            options={
                "default_permissions": ("view",),
                "managed": False,
                "permissions": [("explain_query", "Can run EXPLAIN on recorded queries")],
                "verbose_name": "recorded requests",
                "verbose_name_plural": "recorded requests",
            },
        ),
    ]
