"""Settings for the querylens demo bookshop.

Development only: DEBUG is on and the secret key is public. Never deploy these.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = "django-insecure-querylens-demo-key-do-not-use-anywhere-else"

DEBUG = True

ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]

# The toolbar is optional (the `querylens-profiler[toolbar]` extra): the demo must still start
# without it, only the panel goes missing.
HAS_DEBUG_TOOLBAR = importlib.util.find_spec("debug_toolbar") is not None

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "querylens",
    "shop",
    # The benchmark's pages and its management command (querylens_benchmark).
    "bench",
]
if HAS_DEBUG_TOOLBAR:
    INSTALLED_APPS.append("debug_toolbar")

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Before sessions and auth so the queries they run are part of the record too.
    "querylens.middleware.QueryLensMiddleware",
]
if HAS_DEBUG_TOOLBAR:
    MIDDLEWARE.append("debug_toolbar.middleware.DebugToolbarMiddleware")
MIDDLEWARE += [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "testproject.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.debug",
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "testproject.wsgi.application"
ASGI_APPLICATION = "testproject.asgi.application"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        # QUERYLENS_DEMO_DB lets scripts and CI run the demo on a throwaway file
        # without touching the developer's own db.sqlite3.
        "NAME": os.environ.get("QUERYLENS_DEMO_DB") or BASE_DIR / "db.sqlite3",
    }
}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS: list[dict[str, str]] = []  # admin/admin must be accepted

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"

INTERNAL_IPS = ["127.0.0.1"]

if HAS_DEBUG_TOOLBAR:
    DEBUG_TOOLBAR_CONFIG = {
        # Every demo page is worth comparing with its twin, so keep more of them.
        "RESULTS_CACHE_SIZE": 50,
        # Start collapsed: the page itself explains what to look for first.
        "SHOW_COLLAPSED": True,
    }
    # django-debug-toolbar 8's default panels, spelled out so another panel can be
    # appended in one line.
    DEBUG_TOOLBAR_PANELS = [
        "debug_toolbar.panels.history.HistoryPanel",
        "debug_toolbar.panels.versions.VersionsPanel",
        "debug_toolbar.panels.timer.TimerPanel",
        "debug_toolbar.panels.settings.SettingsPanel",
        "debug_toolbar.panels.headers.HeadersPanel",
        "debug_toolbar.panels.request.RequestPanel",
        "debug_toolbar.panels.sql.SQLPanel",
        "querylens.panels.QueryLensPanel",
        "debug_toolbar.panels.staticfiles.StaticFilesPanel",
        "debug_toolbar.panels.templates.TemplatesPanel",
        "debug_toolbar.panels.alerts.AlertsPanel",
        "debug_toolbar.panels.cache.CachePanel",
        "debug_toolbar.panels.signals.SignalsPanel",
        "debug_toolbar.panels.tasks.TasksPanel",
        "debug_toolbar.panels.community.CommunityPanel",
        "debug_toolbar.panels.redirects.RedirectsPanel",
        "debug_toolbar.panels.profiling.ProfilingPanel",
    ]

QUERYLENS = {
    # "always" so `curl -sI http://127.0.0.1:8000/books/` shows the headers without
    # logging in; the default "auto" would also show them here because DEBUG is on.
    "HEADERS": "always",
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "short": {"format": "%(levelname)s %(name)s: %(message)s"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "short"},
    },
    "loggers": {
        "querylens": {"handlers": ["console"], "level": "DEBUG", "propagate": False},
    },
}
