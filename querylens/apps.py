from __future__ import annotations

from django.apps import AppConfig


class QueryLensConfig(AppConfig):
    name = "querylens"
    verbose_name = "querylens"
    default_auto_field = "django.db.models.AutoField"

    def ready(self) -> None:
        from django.db.backends.signals import connection_created

        from querylens import capture, checks, relations

        checks.register_checks()
        relations.install()
        # Every connection, in every thread, gets the execute wrapper when it
        # opens; connections opened before us get it now.
        connection_created.connect(capture.install, dispatch_uid="querylens.install")
        capture.install_on_open_connections()
