"""The Django project of the ``django`` load: ``startproject``'s settings (its apps and
middleware stack, template engine and context processors), one view rendering a template.

``application`` is what ``wsgi.py`` of a new project exposes; :mod:`bench.apps` sends
``/django/`` paths to it.
"""
