"""The h11 module triowsgi uses: ``h11_mypyc`` (the same h11, compiled with mypyc:
about half the cost per request/response cycle) when the ``speed`` extra installed it,
else h11 itself. Every module imports h11 from here, so both are never mixed."""

from typing import TYPE_CHECKING, Final, Literal

__all__ = ["BUILD", "VERSION", "h11"]

if TYPE_CHECKING:
    import h11
else:
    try:
        import h11_mypyc as h11
    except ImportError:
        import h11

# The distribution's name, for the start-up debug line and the benchmark's check that a
# process serves with the build it claims.
BUILD: Final[Literal["h11", "h11-mypyc"]] = "h11-mypyc" if h11.__name__ == "h11_mypyc" else "h11"
# Both set __version__ but leave it out of __all__, so mypy --strict wants getattr.
VERSION: Final[str] = str(getattr(h11, "__version__", "unknown"))
