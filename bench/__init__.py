"""The benchmark harness of issue 5: ``nox -s bench`` (see ``bench/README.md``).

Nothing is imported here: ``python -m bench.eventlet_server`` must monkey-patch before
anything else is loaded.
"""
