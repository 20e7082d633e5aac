"""The server's half of the WebSocket opening handshake (RFC 6455 §4.2), from a WSGI environ.

h11 has already parsed and validated the request head, so the handshake is read from the
environ's ``HTTP_*`` keys rather than re-serialised for wsproto's ``H11Handshake``; only
the accept token and the permessage-deflate negotiation (RFC 7692) are wsproto's. Plain
functions, no I/O: :func:`negotiate` either returns the ``101`` response to write or
raises :class:`HandshakeRefused` with the HTTP status to answer instead.

Only RFC 6455 (version 13) is spoken. The hixie-75/76 drafts that eventlet.websocket also
accepted (no ``Sec-WebSocket-Version``) are refused with ``400``: no browser has sent them
since 2012, and hixie-76 reads eight body bytes a GET does not declare.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, final

from wsproto.extensions import PerMessageDeflate
from wsproto.utilities import generate_accept_token

__all__ = ["Accepted", "HandshakeRefused", "OriginChecker", "negotiate"]

OriginChecker = Callable[[str | None, str], bool]

WEBSOCKET_VERSION: Final = "13"  # RFC 6455 §4.1; hixie drafts sent none or 8 and lower
KEY_LENGTH: Final = 16  # RFC 6455 §4.1: the key is 16 random bytes, base64-encoded


@final
class HandshakeRefused(Exception):
    """The request is not a WebSocket handshake this server completes.

    ``status`` is the WSGI status line to answer with, ``headers`` any extra headers
    (``426`` names the version spoken, RFC 6455 §4.4).
    """

    def __init__(self, status: str, reason: str, headers: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(reason)
        self.status = status
        self.headers = list(headers)


@final
@dataclass(frozen=True, slots=True)
class Accepted:
    """A handshake to complete: ``response`` is the ``101`` head, bytes on the wire."""

    response: bytes
    subprotocol: str | None
    # The negotiated permessage-deflate, configured by its accept(); None: no compression.
    deflate: PerMessageDeflate | None


def negotiate(
    environ: Mapping[str, Any],
    supported_protocols: Sequence[str] = (),
    origin_checker: OriginChecker | None = None,
) -> Accepted:
    """Check ``environ`` is an RFC 6455 opening handshake and agree on its options.

    ``origin_checker(host, origin)`` is eventlet's: the ``Host`` header and the ``Origin``
    header (``""`` when absent); a false result refuses with ``403``.

    Raises:
        HandshakeRefused: ``400`` (not a WebSocket upgrade, no or malformed key, hixie
            drafts), ``426`` (another protocol version), ``403`` (origin refused).
    """
    _check_upgrade(environ)
    key = environ.get("HTTP_SEC_WEBSOCKET_KEY", "")
    if not _valid_key(key):
        raise HandshakeRefused("400 Bad Request", "missing or malformed Sec-WebSocket-Key")
    origin = environ.get("HTTP_ORIGIN", "")
    if origin_checker is not None and not origin_checker(environ.get("HTTP_HOST"), origin):
        raise HandshakeRefused("403 Forbidden", f"origin {origin!r} refused")
    offered = environ.get("HTTP_SEC_WEBSOCKET_PROTOCOL", "")
    subprotocol = choose_subprotocol(offered, supported_protocols)
    deflate, extensions = choose_deflate(environ.get("HTTP_SEC_WEBSOCKET_EXTENSIONS", ""))
    head = [
        b"HTTP/1.1 101 Switching Protocols",
        b"Upgrade: websocket",
        b"Connection: Upgrade",
        b"Sec-WebSocket-Accept: " + generate_accept_token(key.encode("ascii")),
    ]
    if subprotocol is not None:
        head.append(b"Sec-WebSocket-Protocol: " + subprotocol.encode("latin-1"))
    if extensions is not None:
        head.append(b"Sec-WebSocket-Extensions: " + extensions.encode("ascii"))
    return Accepted(b"\r\n".join([*head, b"", b""]), subprotocol, deflate)


def _check_upgrade(environ: Mapping[str, Any]) -> None:
    # RFC 6455 §4.2.1 items 1-4: a GET of HTTP/1.1 or later whose Connection lists
    # "upgrade" and whose Upgrade lists "websocket", both case-insensitive token lists.
    if environ.get("REQUEST_METHOD") != "GET" or environ.get("SERVER_PROTOCOL") == "HTTP/1.0":
        raise HandshakeRefused("400 Bad Request", "a WebSocket handshake is an HTTP/1.1 GET")
    connection = _tokens(environ.get("HTTP_CONNECTION", ""))
    if "upgrade" not in connection or "websocket" not in _tokens(environ.get("HTTP_UPGRADE", "")):
        raise HandshakeRefused("400 Bad Request", "not a WebSocket upgrade request")
    version = environ.get("HTTP_SEC_WEBSOCKET_VERSION")
    if version is None:
        raise HandshakeRefused("400 Bad Request", "hixie-76 (legacy) WebSockets are not supported")
    if version.strip() != WEBSOCKET_VERSION:
        raise HandshakeRefused(
            "426 Upgrade Required",
            f"WebSocket version {version!r} is not supported",
            [("Sec-WebSocket-Version", WEBSOCKET_VERSION)],
        )


def _tokens(value: str) -> list[str]:
    return [token.strip().lower() for token in value.split(",")]


def _valid_key(key: str) -> bool:
    try:
        return len(base64.b64decode(key.encode("ascii"), validate=True)) == KEY_LENGTH
    except (UnicodeEncodeError, binascii.Error):
        return False


def choose_subprotocol(offered: str, supported: Sequence[str]) -> str | None:
    """The first of the client's offers (in its order of preference) that ``supported``
    has, or ``None`` (RFC 6455 §4.2.2: the server picks at most one)."""
    for name in offered.split(","):
        if name.strip() and name.strip() in supported:
            return name.strip()
    return None


def choose_deflate(offered: str) -> tuple[PerMessageDeflate | None, str | None]:
    """The first permessage-deflate offer wsproto can accept, and the response header.

    The server always asks for ``no_context_takeover`` both ways (RFC 7692 §7.1.1: a
    server may add either parameter to its response): the zlib state of a connection
    (about 300 KiB for a compressor, 40 KiB for a decompressor) is then dropped after
    each message instead of being kept while the connection is idle, so that thousands
    of idle WebSockets cost kilobytes each, at some loss of ratio across messages.
    """
    for offer in offered.split(","):
        if offer.split(";", 1)[0].strip().lower() != PerMessageDeflate.name:
            continue
        deflate = PerMessageDeflate(
            client_no_context_takeover=True, server_no_context_takeover=True
        )
        try:
            params = deflate.accept(offer)
        except ValueError:  # a window-bits parameter that is not a number: decline it
            continue
        if params is None or params is False:  # window bits it can't meet: decline
            continue
        name = PerMessageDeflate.name
        return deflate, name if params is True else f"{name}; {params}"
    return None, None
