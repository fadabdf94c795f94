"""A small Wagtail site: querylens on a CMS's code, run in a process of its own.

``python -m tests.wagtail_site.run DB_PATH`` migrates a fresh SQLite file,
adds images and pages, requests the project's gallery pages and Wagtail's
own admin screens, and prints the stored records as JSON for
``tests/test_wagtail.py``. Wagtail's hundred migrations and its apps stay
out of the main test suite's settings.
"""
