"""Whether triowsgi's per-request modules run compiled with mypyc (``hatch_build.py``
built them into the wheel) or as the plain Python they are compiled from."""

from typing import Final

from . import _wsgi

__all__ = ["COMPILED"]

COMPILED: Final[bool] = not _wsgi.__file__.endswith(".py")
