"""The few errors triowsgi raises on its own, and the one table mapping them to HTTP statuses.

Everything the server rejects before the application runs is an :class:`HTTPError`; the
connection answers it with :data:`STATUS` of its type and closes. Errors h11 raises are
translated at one boundary, :func:`from_h11`.
"""

from __future__ import annotations

import traceback
from typing import Final

from ._h11 import h11

__all__ = [
    "REASONS",
    "BadRequest",
    "ClientDisconnected",
    "ExpectationFailed",
    "HTTPError",
    "HeadersTooLarge",
    "MethodNotImplemented",
    "NotImplementedEncoding",
    "RequestBodyTimeout",
    "RequestTimeout",
    "RequestTooLarge",
    "SocketTimeout",
    "URITooLong",
    "VersionNotSupported",
    "cut_off_status",
    "error_body",
    "from_h11",
]


class HTTPError(Exception):
    """A request the server refuses; answered with ``status`` and a closed connection."""

    status = 400


class BadRequest(HTTPError):
    """Malformed framing, request line or headers (RFC 9112)."""


class URITooLong(HTTPError):
    """The request target is longer than ``url_length_limit``."""

    status = 414


class RequestTimeout(HTTPError):
    """The request head did not arrive within ``header_timeout``."""

    status = 408


class RequestBodyTimeout(RequestTimeout, TimeoutError):
    """The request body came slower than ``body_timeout`` and ``body_min_rate`` allow.

    Raised into the app by ``wsgi.input`` reads (a :class:`TimeoutError`); if the app
    lets it through, the client gets 408. The connection closes after the response.
    """


class RequestTooLarge(HTTPError):
    """The request body is longer than the server accepts."""

    status = 413


class ExpectationFailed(HTTPError):
    """An ``Expect`` other than ``100-continue`` (RFC 9110 §10.1.1)."""

    status = 417


class HeadersTooLarge(HTTPError):
    """Too many header fields, a header line too long, or a header block too big."""

    status = 431


class NotImplementedEncoding(HTTPError):
    """A Transfer-Encoding other than ``chunked`` (RFC 9112 §6.1)."""

    status = 501


class MethodNotImplemented(HTTPError):
    """CONNECT: triowsgi does not tunnel (RFC 9110 §9.3.6, §15.6.2)."""

    status = 501


class VersionNotSupported(HTTPError):
    """A request for HTTP/2 or later over an HTTP/1 connection."""

    status = 505


class ClientDisconnected(ConnectionError):
    """The client closed or reset the connection; raised into the app by ``wsgi.input``
    reads and ``write()`` so that it can stop early. No response is possible."""


class SocketTimeout(TimeoutError):
    """``socket_timeout`` expired while waiting on the client; the connection is dropped.

    Raised into the app by ``wsgi.input`` reads and ``write()``.
    """


_BY_STATUS: dict[int, type[HTTPError]] = {
    cls.status: cls
    for cls in (
        RequestTimeout,
        BadRequest,
        URITooLong,
        RequestTooLarge,
        ExpectationFailed,
        HeadersTooLarge,
        NotImplementedEncoding,
        VersionNotSupported,
    )
}


def from_h11(exc: h11.RemoteProtocolError) -> HTTPError:
    """Translate h11's error, keeping its status hint when it names one of ours."""
    cls = _BY_STATUS.get(exc.error_status_hint, BadRequest)
    return cls(str(exc))


# The access log's status for a request cut off before its response head was sent (no
# status went to the client: these say why there is none). nginx's 499, "client closed
# request", for a client that went away.
CLIENT_CLOSED_REQUEST: Final = 499


def cut_off_status(exc: BaseException) -> int:
    """The status the access log shows for a request whose app call or response ended
    with ``exc`` before any response head was sent: 499 when the client went away,
    408 when a wait on the client timed out, else 503 (the server stopped serving it:
    the shutdown's grace period ended)."""
    if isinstance(exc, ClientDisconnected):
        return CLIENT_CLOSED_REQUEST
    if isinstance(exc, TimeoutError):
        return RequestTimeout.status
    return 503


# The reason phrases of the statuses the server sends on its own.
REASONS: Final = {
    400: "Bad Request",
    408: "Request Timeout",
    413: "Content Too Large",
    414: "URI Too Long",
    417: "Expectation Failed",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    505: "HTTP Version Not Supported",
}


def error_body(status: int, exc: BaseException | None = None) -> bytes:
    """The text of one of the server's own error responses; ``exc``'s traceback is
    included only when the caller decided to (``debug=True``)."""
    text = f"{status} {REASONS.get(status, '')}\n"
    if exc is not None:
        text += "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return text.encode("utf-8")
