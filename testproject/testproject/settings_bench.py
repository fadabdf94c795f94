"""Settings shared by the three benchmark variants (see ``bench/``).

Never used on its own: ``settings_bench_none``, ``settings_bench_querylens`` and
``settings_bench_toolbar`` import everything from here and add their
instrumentation. Nothing in this module may import querylens or the toolbar, so
the uninstrumented variant really runs without them.

The stack is what ``startproject`` gives, minus the admin: the same in every
variant, so the only difference between two variants is the tool measured.
"""

from __future__ import annotations

import os

SECRET_KEY = "querylens-benchmark-not-secret"

# DEBUG off in every variant: with DEBUG on, Django itself logs every query
# (CursorDebugWrapper), which is instrumentation of its own and would make
# the uninstrumented baseline slower, and the ratios look better than they are.
# QUERYLENS_BENCH_DEBUG=1 (`querylens_benchmark --debug`) measures that set-up
# instead, the way the toolbar is usually run.
DEBUG = os.environ.get("QUERYLENS_BENCH_DEBUG") == "1"

ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "shop",
    "bench",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "bench.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        # Set by the benchmark command: one seeded file shared by the workers.
        "NAME": os.environ.get("QUERYLENS_BENCH_DB", "bench.sqlite3"),
        # One connection per worker for the whole run: reconnecting per request
        # would add the same constant to every variant and flatter the ratios.
        "CONN_MAX_AGE": None,
    }
}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"
USE_I18N = True
STATIC_URL = "static/"
INTERNAL_IPS = ["127.0.0.1"]
