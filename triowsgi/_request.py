"""The rules for a request head that h11 leaves to the server (see docs/decisions.md).

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
    ExpectationFailed,
    HeadersTooLarge,
    MethodNotImplemented,
    RequestTooLarge,
    URITooLong,
    VersionNotSupported,
)
from ._h11 import h11

__all__ = [
    "ABSOLUTE_FORM_RE",
    "MAX_HEADER_LINE",
    "as_http11",
    "check_line_ends",
    "check_request",
    "check_request_line",
    "list_members",
]

# eventlet's (and most servers') per-line limit; a longer header line gets 431.
MAX_HEADER_LINE: Final = 8 * 1024
# h11's own rule for the end of a head (its blank_line_regex).
_HEAD_END: Final = re.compile(rb"\n\r?\n")
# RFC 9112 §3.2 requires a 400 for an invalid Host: uri-host [ ":" port ] (RFC 3986).
HOST_RE: Final = re.compile(rb"(\[[0-9A-Za-z:.]+\]|[0-9A-Za-z\-._~%!$&'()*+,;=]*)(:[0-9]*)?")
# An absolute-form request target (RFC 9112 §3.2.2): a scheme (RFC 3986 §3.1), then
# "//" and the authority, its one group.
ABSOLUTE_FORM_RE: Final = re.compile(rb"[A-Za-z][A-Za-z0-9+.\-]*://([^/?]*)")
# What check_line_ends looks for: LF and CR, and the control characters RFC 9110 §5.5
# excludes from field values (all but HTAB; h11 refuses NUL, VT and FF itself but lets
# the others through). Deleting every other byte from a head leaves only these: one
# bytes.translate pass, cheaper than counting line ends or a regex over the values.
_LINE_ENDS_AND_CONTROLS: Final = bytes([*range(0x09), *range(0x0A, 0x20), 0x7F])
_OTHER_BYTES: Final = bytes(sorted(set(range(256)) - set(_LINE_ENDS_AND_CONTROLS)))
# The header fields check_request looks at: one set lookup per field rather than a
# comparison per rule.
_CHECKED_FIELDS: Final = frozenset(
    (b"content-length", b"host", b"transfer-encoding", b"content-type", b"expect", b"connection")
)


def check_request(request: h11.Request, config: Config) -> tuple[int | None, bool]:
    """Refuse what h11 accepted but triowsgi won't serve; the Content-Length, if any,
    and whether the client said ``Connection: close`` (RFC 9112 §9.6)."""
    _check_version_and_method(request, config)
    _check_target(request.method, request.target)
    # raw_items(): one list, where iterating h11's Headers (a Sequence) costs a Python
    # __getitem__ call per field and an IndexError at the end (~3% of a hello request).
    headers = request.headers.raw_items()
    if len(headers) > config.max_header_fields:
        raise HeadersTooLarge(f"{len(headers)} header fields")
    length: int | None = None
    has_encoding = has_type = close = False
    block = 0
    for raw_name, value in headers:
        if len(raw_name) + len(value) + 2 > MAX_HEADER_LINE:
            raise HeadersTooLarge(f"header line {raw_name!r} too long")
        block += len(raw_name) + len(value) + 4  # "name: value\r\n"
        name = raw_name.lower()
        if name not in _CHECKED_FIELDS:
            continue
        if name == b"content-length":
            length = int(value)  # h11 checked it is digits, and one value
        elif name == b"host":
            _check_host(value)
        elif name == b"content-type":
            # A singleton field that decides how the body is read: joined, a WAF and
            # the app could each read a different one.
            if has_type:
                raise BadRequest("more than one Content-Type")
            has_type = True
        elif name == b"expect":
            _check_expect(value)
        elif name == b"transfer-encoding":
            has_encoding = True
        elif name == b"connection":
            close = close or b"close" in list_members(value)
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
    return length, close


def _check_version_and_method(request: h11.Request, config: Config) -> None:
    if not request.http_version.startswith(b"1."):
        if request.http_version >= b"2":
            raise VersionNotSupported(request.http_version.decode("ascii"))
        raise BadRequest(f"unsupported HTTP version {request.http_version!r}")
    if request.method == b"CONNECT":
        # No tunnels here: a 2xx answer to CONNECT has no body framing (RFC 9112 §6.3),
        # and the response framing (_framing.py) has no rule for one.
        raise MethodNotImplemented("CONNECT")
    if len(request.target) > config.url_length_limit:
        raise URITooLong(f"request target of {len(request.target)} bytes")
    if len(request.method) > config.url_length_limit:
        # As a request line too long to parse gets.
        raise URITooLong(f"method of {len(request.method)} bytes")


def _check_target(method: bytes, target: bytes) -> None:
    """RFC 9112 §3.2: origin-form (``/path``) or absolute-form (``http://host/path``)
    for any method, ``*`` for OPTIONS only; authority-form (``host:port``) is CONNECT's,
    refused before this."""
    if target[:1] == b"/":  # origin-form, nearly always
        return
    if target == b"*":
        if method != b"OPTIONS":
            raise BadRequest(f"target * with {method!r}")
        return
    absolute = ABSOLUTE_FORM_RE.match(target)
    if absolute is None:
        raise BadRequest(f"request target {target!r:.80} in no form {method!r} allows")
    host = HOST_RE.fullmatch(absolute[1])
    # RFC 9110 §4.2.1: an http URI with an empty host is invalid; RFC 9110 §4.2.4: so is
    # one with userinfo (user@host), which HOST_RE leaves out.
    if host is None or not host[1]:
        raise BadRequest(f"invalid authority in request target {target!r:.80}")


def list_members(value: bytes) -> list[bytes]:
    """The members of a comma-separated list field, lower-case, empty ones left out
    (RFC 9110 §5.6.1)."""
    return [member for item in value.lower().split(b",") if (member := item.strip(b" \t"))]


def _check_host(value: bytes) -> None:
    if not HOST_RE.fullmatch(value):
        raise BadRequest(f"invalid Host {value!r}")


def _check_expect(value: bytes) -> None:
    # RFC 9110 §10.1.1: 100-continue is the only expectation defined, and h11 acts on
    # it (a case-insensitive list member). Any other is one the server cannot meet:
    # 417, as Apache answers, rather than serving a request whose condition was ignored.
    for expectation in list_members(value):
        if expectation != b"100-continue":
            raise ExpectationFailed(f"Expect {value!r}")


def check_request_line(prefix: bytes) -> None:
    """``prefix``: the first bytes of a head. An HTTP/0.9 request (``GET /``) would wait,
    bounded only by header_timeout, for a head it never completes: a whole first line
    with no version is refused at once."""
    line, newline, _ = prefix.partition(b"\n")
    if newline and not line.rstrip(b"\r").rpartition(b" ")[2].startswith(b"HTTP/"):
        raise BadRequest("no HTTP version in the request line")


def check_line_ends(received: bytes) -> None:
    """``received``: the bytes a head h11 accepted was parsed from (and maybe some that
    follow it).

    h11 takes a bare LF for a line end (RFC 9112 §2.2 allows it), but an intermediary
    that doesn't would frame the request differently: the smuggling of CVE-2022-32214
    (Node.js) and GHSA-pg36-wpm5-g57p (waitress). And it lets control characters through
    in field values, which RFC 9110 §5.5 excludes (the request line and field names have
    none in a head h11 accepted).
    """
    blank_line = _HEAD_END.search(received)  # where h11 found the end of the head
    end = blank_line.end() if blank_line else len(received)
    head = received if end == len(received) else received[:end]
    # h11 refuses a CR anywhere but before an LF: with the CRLFs gone, what is left is
    # bare LFs and control characters.
    left = head.translate(None, _OTHER_BYTES).replace(b"\r\n", b"")
    if b"\n" in left:
        raise BadRequest("bare LF in the request head")
    if left:
        raise BadRequest(f"control character {left[:1]!r} in a header value")


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
