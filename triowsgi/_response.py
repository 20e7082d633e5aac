"""From the app's ``start_response`` arguments to a validated ``h11.Response``.

Pure functions, called in the app's worker thread so that an invalid status or header
is an application error (a 500, if nothing was sent yet) at the point the app caused it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import Final

from ._dates import http_date_now
from ._h11 import h11

__all__ = ["build_response", "capitalize", "has_body"]

# RFC 9110 §15: the status code is three digits; the reason phrase is HTAB / SP / VCHAR /
# obs-text, so CR, LF and NUL (response splitting) are refused.
_STATUS_RE: Final = re.compile(rb"([1-9][0-9]{2})(?: ([\t\x20-\x7e\x80-\xff]*))?")


@functools.lru_cache(maxsize=512)  # an app sends the same few names again and again
def capitalize(name: str) -> str:
    """eventlet's header-name style: ``sOMe-WEirD`` -> ``Some-Weird``; ASCII letters only."""
    return "-".join(
        word[:1].upper() + word[1:].lower() if word.isascii() else _ascii_cap(word)
        for word in name.split("-")
    )


def _ascii_cap(word: str) -> str:
    # bytes.capitalize() touches ASCII letters only, which is what eventlet does (it
    # works on latin-1 bytes), so "wiTH-ß" keeps its "ß".
    return word.encode("latin-1").capitalize().decode("latin-1")


def has_body(status_code: int, method: bytes) -> bool:
    """Whether a response may carry content (RFC 9110 §6.4.1, §9.3.2)."""
    return method != b"HEAD" and status_code >= 200 and status_code not in (204, 304)


def parse_status(status: object) -> tuple[int, bytes]:
    """Split a WSGI status such as ``"404 Not Found"`` into code and reason bytes."""
    if type(status) is not str:
        raise TypeError(f"WSGI status must be a str, not {type(status).__name__}: {status!r}")
    match = _STATUS_RE.fullmatch(_latin1(status, "status"))
    if match is None:
        raise ValueError(f"invalid WSGI status {status!r}: expected e.g. '200 OK'")
    code = int(match.group(1))
    if code < 200:
        raise ValueError(f"WSGI status {status!r}: an app cannot send a 1xx final response")
    return code, match.group(2) or b""


def build_response(
    status: object,
    headers: Sequence[tuple[str, str]],
    *,
    capitalize_names: bool,
    content_length: int | None,
    close: bool,
) -> h11.Response:
    """The response head: the app's headers in order, then ``Date``, ``Content-Length``
    (when the server computed one) and ``Connection: close`` as needed.

    Raises:
        TypeError, ValueError: a status or header the app should not have sent (wrong
            type, not latin-1, CR/LF, not an RFC 9110 token); h11 validates the rest.
    """
    code, reason = parse_status(status)
    raw: list[tuple[bytes, bytes]] = []
    seen_date = seen_length = False
    for item in headers:
        name, value = _header(item)
        lower = name.lower()
        seen_date = seen_date or lower == "date"
        seen_length = seen_length or lower == "content-length"
        if capitalize_names:
            name = capitalize(name)
        # RFC 9110 §5.5: surrounding SP/HTAB is not part of the value; h11 would refuse
        # it, and eventlet sent such values, so trim rather than fail the response.
        value = value.strip(" \t")
        raw.append((_latin1(name, "header name"), _latin1(value, "header value")))
    if not seen_date:
        raw.append((b"Date", http_date_now()))
    # RFC 9110 §8.6: none in 204; in 304 it would have to be the length of a 200 we
    # don't know. HEAD gets the length a GET would have (§9.3.2).
    if content_length is not None and not seen_length and code not in (204, 304):
        raw.append((b"Content-Length", b"%d" % content_length))
    if close:
        raw.append((b"Connection", b"close"))
    try:
        return h11.Response(status_code=code, reason=reason, headers=raw)
    except h11.LocalProtocolError as exc:
        raise ValueError(f"invalid response from the application: {exc}") from None


def _header(item: object) -> tuple[str, str]:
    if not (isinstance(item, tuple) and len(item) == 2):
        raise TypeError(f"WSGI response headers must be (name, value) tuples, not {item!r}")
    name, value = item
    if type(name) is not str or type(value) is not str:
        raise TypeError(f"WSGI header names and values must be str, not {item!r}")
    return name, value


def _latin1(text: str, what: str) -> bytes:
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError(f"{what} {text!r} is not latin-1 (PEP 3333 requires it)") from None
