"""From the app's ``start_response`` arguments to a validated :class:`ResponseHead`.

Pure functions, called in the app's worker thread so that an invalid status or header
is an application error (a 500, if nothing was sent yet) at the point the app caused it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import Final, final

from ._dates import http_date_now
from ._request import list_members

__all__ = ["ResponseHead", "build_response", "capitalize"]

# RFC 9110 §15: the status code is three digits; the reason phrase is HTAB / SP / VCHAR /
# obs-text, so CR, LF and NUL (response splitting) are refused.
_STATUS_RE: Final = re.compile(rb"([1-9][0-9]{2})(?: ([\t\x20-\x7e\x80-\xff]*))?")
# RFC 9110 §5.1, §5.5: a field name is a token; a value (trimmed) holds no CR, LF, NUL,
# VT or FF (h11's own rule, which framed every header before).
_TOKEN_RE: Final = re.compile(rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+")
_VALUE_FORBIDDEN_RE: Final = re.compile(rb"[\x00\n\r\x0b\x0c]")
_DIGITS_RE: Final = re.compile(rb"[0-9]{1,20}")  # as h11 allows
_INVALID: Final = "invalid response from the application"
# The headers that frame a response's body and decide on keep-alive (see _framing.py).
_FRAMING: Final = frozenset(("content-length", "transfer-encoding", "connection"))


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


@final
class ResponseHead:
    """A validated response head, before its framing.

    ``status`` is the status line after its version (``b" 200 OK\\r\\n"``); ``fields``
    every header line in order, the server's ``Date``, ``Content-Length`` and
    ``Connection`` after the app's. The headers that frame the body and decide on
    keep-alive are also read out (:mod:`._framing` acts on them): ``content_length``,
    ``chunked`` (the app's ``Transfer-Encoding: chunked``) and ``connection`` (the
    lower-case tokens of every ``Connection`` header).
    """

    __slots__ = ("chunked", "connection", "content_length", "fields", "status", "status_code")

    def __init__(
        self,
        status_code: int,
        status: bytes,
        fields: list[tuple[bytes, bytes]],
        *,
        content_length: int | None,
        chunked: bool,
        connection: tuple[bytes, ...],
    ) -> None:
        self.status_code = status_code
        self.status = status
        self.fields = fields
        self.content_length = content_length
        self.chunked = chunked
        self.connection = connection


def build_response(
    status: object,
    headers: Sequence[object],
    *,
    capitalize_names: bool,
    content_length: int | None,
    close: bool,
) -> ResponseHead:
    """The response head: the app's headers in order, then ``Date``, ``Content-Length``
    (when the server computed one) and ``Connection: close`` as needed.

    Raises:
        TypeError, ValueError: a status or header the app should not have sent (wrong
            type, not latin-1, CR/LF, not an RFC 9110 token, a Content-Length that is no
            number or two that differ, a Transfer-Encoding other than chunked).
    """
    code, reason = parse_status(status)
    fields: list[tuple[bytes, bytes]] = []
    length: int | None = None
    chunked = seen_date = False
    connection: tuple[bytes, ...] = ()
    for item in headers:
        name, value = _header(item)
        lower = name.lower()
        if capitalize_names:
            name = capitalize(name)
        # RFC 9110 §5.5: surrounding SP/HTAB is not part of the value; eventlet sent such
        # values, so trim rather than fail the response.
        field = _field(_latin1(name, "header name"), _latin1(value.strip(" \t"), "header value"))
        if lower in _FRAMING:
            if lower == "content-length":
                digits = _content_length(field[1], length)
                if length is not None:
                    continue  # one line for one length (as h11 wrote it)
                length = int(digits)
                field = (field[0], digits)
            elif lower == "transfer-encoding":
                chunked = _chunked(field[1], chunked)
                field = (field[0], b"chunked")  # (the only one: in h11's lower case)
            else:
                connection += tuple(list_members(field[1]))
        fields.append(field)
        seen_date = seen_date or lower == "date"
    if not seen_date:
        fields.append((b"Date", http_date_now()))
    # RFC 9110 §8.6: none in 204; in 304 it would have to be the length of a 200 we
    # don't know. HEAD gets the length a GET would have (§9.3.2).
    if content_length is not None and length is None and code not in (204, 304):
        length = content_length
        fields.append((b"Content-Length", b"%d" % content_length))
    if close:
        connection += (b"close",)
        fields.append((b"Connection", b"close"))
    return ResponseHead(
        code,
        b" %d %s\r\n" % (code, reason),
        fields,
        content_length=length,
        chunked=chunked,
        connection=connection,
    )


def _content_length(value: bytes, previous: int | None) -> bytes:
    # RFC 9110 §8.6: digits; a list of one value repeated is that value.
    values = {item.strip(b" \t") for item in value.split(b",")}
    digits = values.pop() if len(values) == 1 else b""
    if _DIGITS_RE.fullmatch(digits) is None:
        raise ValueError(f"{_INVALID}: bad Content-Length {value!r}")
    if previous is not None and previous != int(digits):
        raise ValueError(f"{_INVALID}: conflicting Content-Length headers")
    return digits


def _chunked(value: bytes, previous: bool) -> bool:
    # The only transfer coding an HTTP/1.1 server can apply to an app's body (RFC 9112
    # §7): the app's iterable gives the bytes as they go on the wire otherwise.
    if previous or value.lower() != b"chunked":
        raise ValueError(f"{_INVALID}: only one Transfer-Encoding: chunked is supported")
    return True


def _field(name: bytes, value: bytes) -> tuple[bytes, bytes]:
    if _TOKEN_RE.fullmatch(name) is None:
        raise ValueError(f"{_INVALID}: Illegal header name {name!r}")
    if _VALUE_FORBIDDEN_RE.search(value) is not None:
        raise ValueError(f"{_INVALID}: Illegal header value {value!r}")
    return name, value


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
