"""querylens's benchmark: the pages it times, its data and its worker processes.

``manage.py querylens_benchmark`` (in the shop app) drives one long-lived worker
process per variant (``bench.worker``), each with its own settings module
(``testproject.settings_bench_<variant>``): querylens installs global hooks
when its app is ready, so the uninstrumented variant must never import it.
``bench.runner`` holds the parent side: rounds, statistics and the report.

This package is also a tiny Django app (``bench``) so that its templates load.
"""
