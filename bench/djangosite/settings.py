"""``django-admin startproject``'s settings, kept as generated where they matter to a
request: the same ``INSTALLED_APPS``, ``MIDDLEWARE`` and ``TEMPLATES``. ``DEBUG`` is off,
as in production; the view touches no database (the sqlite file is never opened)."""

from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent

SECRET_KEY = "triowsgi-bench-only"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
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

ROOT_URLCONF = "bench.djangosite.urls"

TEMPLATES: list[dict[str, Any]] = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
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

DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}

# Not startproject's: Django's logging set-up (dictConfig of its DEFAULT_LOGGING, with
# disable_existing_loggers=False) sets every other existing logger's ``disabled`` to
# False, and `triowsgi --no-access-log` turns the access log off by disabling the
# triowsgi.access logger: with it, the triowsgi rows wrote an access line per request
# (hello-128 15,100 -> 12,000 req/s on one [speed] server, 2026-12-05). Until the command
# line turns the access log off some other way, Django configures no logging here (it
# logs nothing a 200 needs), so that every server runs without an access log.
LOGGING_CONFIG = None

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
