"""HTTP dates (RFC 9110 §5.6.7 IMF-fixdate), cached per second for the ``Date`` header."""

from __future__ import annotations

import time

__all__ = ["format_date_time", "http_date_now"]

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def format_date_time(timestamp: float) -> str:
    """Format a POSIX timestamp as an IMF-fixdate in GMT, dropping fractions of a second.

    >>> format_date_time(0)
    'Thu, 01 Jan 1970 00:00:00 GMT'
    """
    t = time.gmtime(timestamp)
    return (
        f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT"
    )


_cache: tuple[int, bytes] = (-1, b"")


def http_date_now() -> bytes:
    """The current IMF-fixdate as bytes; formatted at most once per second."""
    global _cache
    now = int(time.time())
    if _cache[0] != now:
        _cache = (now, format_date_time(now).encode("ascii"))
    return _cache[1]
