"""Loading the app a command line names (``MODULE:ATTRIBUTE``), and the error a user can
fix; below both the ``triowsgi`` command (:mod:`._cli`) and its ``--workers`` processes
(:mod:`._processes`, which loads the app in each worker).
"""

from __future__ import annotations

import gc
import importlib
import os
import sys
from typing import Any

from ._wsgi import WSGIApp

__all__ = ["CLIError", "freeze_heap", "load_app", "split_spec"]


class CLIError(Exception):
    """A problem the user can fix; printed as one line, exit status 1."""


def load_app(spec: str, *, factory: bool = False) -> WSGIApp:
    """Import ``MODULE:ATTRIBUTE`` (the current directory first on the path, as for
    gunicorn); with ``factory``, call it to get the app."""
    module_name, attribute = split_spec(spec)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise CLIError(f"cannot import module {module_name!r}: {exc}") from None
    app: Any = module
    for name in attribute.split("."):
        try:
            app = getattr(app, name)
        except AttributeError:
            raise CLIError(f"module {module_name!r} has no attribute {attribute!r}") from None
    if factory:
        app = app()
    if not callable(app):
        raise CLIError(f"{spec} is not callable: {type(app).__name__}")
    return app  # type: ignore[no-any-return]


def split_spec(spec: str) -> tuple[str, str]:
    """``MODULE:ATTRIBUTE``'s two parts, or a :class:`CLIError` saying what it must be."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise CLIError(f"app {spec!r} must look like MODULE:ATTRIBUTE, e.g. myapp:app")
    return module_name, attribute


def freeze_heap() -> None:
    """Take what exists now, the loaded app and everything its import made, out of the
    garbage collector's scans for good: ``gc.collect()``, then ``gc.freeze()``.

    Those objects live as long as the process, yet every full collection walks them
    all, and under load a server makes full collections often (each request's objects
    in flight are promoted until one is due): with a framework's few hundred thousand
    objects, that was 6 us of a Flask request's ~250 (bench/NOTES.md). Frozen objects
    are still freed by reference counting; only a reference cycle among them that later
    becomes unreachable (dropped from a cache, say) is never collected, nor anything only
    it refers to. The collection first keeps the import's own garbage out.
    """
    gc.collect()
    gc.freeze()
