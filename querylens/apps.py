from __future__ import annotations

from django.apps import AppConfig


class QueryLensConfig(AppConfig):
    name = "querylens"
    verbose_name = "querylens"
    default_auto_field = "django.db.models.AutoField"

    def ready(self) -> None:
        from django.db.backends.signals import connection_created

        from querylens import capture, checks, outside_requests, relations
        from querylens.conf import conf

        checks.register_checks()
        relations.install()
        outside_requests.connect_task_signals()
        if conf.RECORD_OUTSIDE_REQUESTS:
            outside_requests.install_command_hook()
        # Every connection, in every thread, gets the execute wrapper when it
        # opens; connections opened before us get it now.
        connection_created.connect(capture.install, dispatch_uid="querylens.install")
        capture.install_on_open_connections()
