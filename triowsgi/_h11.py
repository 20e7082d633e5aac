"""The h11 module triowsgi uses: ``h11_mypyc`` (the same h11, compiled with mypyc:
about half the cost per request/response cycle) when the ``speed`` extra installed it,
else h11 itself. Every module imports h11 from here, so both are never mixed."""

from typing import TYPE_CHECKING

__all__ = ["h11"]

if TYPE_CHECKING:
    import h11
else:
    try:
        import h11_mypyc as h11
    except ImportError:
        import h11
