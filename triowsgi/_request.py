"""The rules for a request head that h11 leaves to the server (see DECISIONS.md).

h11 parses and frames; these pure functions refuse what it accepts but a safe server
must not: smuggling shapes, oversized heads, versions and methods triowsgi won't serve.
Each raises the :mod:`._errors` type whose status answers it.
"""

from __future__ import annotations

import re
from typing import Final

from ._config import Config
from ._errors import (
    BadRequest,
    HeadersTooLarge,
    MethodNotImplemented,
    RequestTooLarge,
    URITooLong,
    VersionNotSupported,
)
from ._h11 import h11

__all__ = [
    "MAX_HEADER_LINE",
    "as_http11",
    "check_line_ends",
    "check_request",
    "check_request_line",
]

# eventlet's (and most servers') per-line limit; a longer header line gets 431.
MAX_HEADER_LINE: Final = 8 * 1024
# RFC 9112 §3.2 requires a 400 for an invalid Host: uri-host [ ":" port ] (RFC 3986).
# h11's own rule for the end of a head (its blank_line_regex).
_HEAD_END: Final = re.compile(rb"\n\r?\n")
HOST_RE: Final = re.compile(rb"(\[[0-9A-Za-z:.]+\]|[0-9A-Za-z\-._~%!$&'()*+,;=]*)(:[0-9]*)?")


def check_request(request: h11.Request, config: Config) -> int | None:
    """Refuse what h11 accepted but triowsgi won't serve; the Content-Length, if any."""
    _check_version_and_method(request, config)
    headers = request.headers
    if len(headers) > config.max_header_fields:
        raise HeadersTooLarge(f"{len(headers)} header fields")
    length: int | None = None
    has_encoding = False
    block = 0
    for name, value in headers:
        if len(name) + len(value) + 2 > MAX_HEADER_LINE:
            raise HeadersTooLarge(f"header line {name!r} too long")
        block += len(name) + len(value) + 4  # "name: value\r\n"
        if name == b"content-length":
            length = int(value)  # h11 checked it is digits, and one value
        elif name == b"host" and not HOST_RE.fullmatch(value):
            raise BadRequest(f"invalid Host {value!r}")
        has_encoding = has_encoding or name == b"transfer-encoding"
    # h11's max_incomplete_event_size only stops a head still incomplete at the
    # limit; one that completes in the receive crossing it gets here.
    if block > config.max_header_bytes:
        raise HeadersTooLarge(f"header block of {block} bytes")
    limit = config.max_body_size
    if length is not None and limit is not None and length > limit:
        # 413 before the app runs: RFC 9110 §15.5.14.
        raise RequestTooLarge(f"Content-Length {length} > max_body_size")
    if length is not None and has_encoding:
        # RFC 9112 §6.1: a request smuggling signature.
        raise BadRequest("Content-Length and Transfer-Encoding are not allowed together")
    return length


def _check_version_and_method(request: h11.Request, config: Config) -> None:
    if not request.http_version.startswith(b"1."):
        if request.http_version >= b"2":
            raise VersionNotSupported(request.http_version.decode("ascii"))
        raise BadRequest(f"unsupported HTTP version {request.http_version!r}")
    if request.method == b"CONNECT":
        # No tunnels here, and a 2xx answer would make h11 switch protocols.
        raise MethodNotImplemented("CONNECT")
    if len(request.target) > config.url_length_limit:
        raise URITooLong(f"request target of {len(request.target)} bytes")
    if len(request.method) > config.url_length_limit:
        # As a request line too long to parse gets.
        raise URITooLong(f"method of {len(request.method)} bytes")


def check_request_line(prefix: bytes) -> None:
    """``prefix``: the first bytes of a head. An HTTP/0.9 request (``GET /``) would wait,
    bounded only by header_timeout, for a head it never completes: a whole first line
    with no version is refused at once."""
    line, newline, _ = prefix.partition(b"\n")
    if newline and not line.rstrip(b"\r").rpartition(b" ")[2].startswith(b"HTTP/"):
        raise BadRequest("no HTTP version in the request line")


def check_line_ends(received: bytes) -> None:
    """``received``: the bytes a head was parsed from (and maybe some that follow it).

    h11 takes a bare LF for a line end (RFC 9112 §2.2 allows it), but an intermediary
    that doesn't would frame the request differently: the smuggling of CVE-2022-32214
    (Node.js) and GHSA-pg36-wpm5-g57p (waitress).
    """
    blank_line = _HEAD_END.search(received)  # where h11 found the end of the head
    end = blank_line.end() if blank_line else len(received)
    if received.count(b"\n", 0, end) != received.count(b"\r\n", 0, end):
        raise BadRequest("bare LF in the request head")


def as_http11(request: h11.Request) -> h11.Request:
    """RFC 9110 §2.5: a higher HTTP/1 minor version (HTTP/1.2) is served as the highest
    one implemented, 1.1, and the app sees SERVER_PROTOCOL HTTP/1.1."""
    if request.http_version <= b"1.1":
        return request
    headers = request.headers.raw_items()
    try:
        return h11.Request(
            method=request.method, target=request.target, headers=headers, http_version=b"1.1"
        )
    except h11.LocalProtocolError as exc:  # no Host, which h11 requires of 1.1 only
        raise BadRequest(str(exc)) from exc
