"""``bench.djangosite.wsgi:application``, as ``django-admin startproject`` lays it out."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.djangosite.settings")

application = get_wsgi_application()
