"""How a response goes on the wire: its head, its body's framing, and whether the
connection can carry another request after it (RFC 9112 §6, §9.3).

h11 parses every request and frames every request body; the response side is
triowsgi's own, because h11's cost ~24 us of the ~68 us a hello request's logic took on
the default install (``h11.Response`` validates every header the app gave, then ``send``
builds and validates a second one; bench/NOTES.md, issue 20). The rules are h11's, so
that the bytes are what h11 wrote (tests/test_framing.py compares them):

- HEAD, 204 and 304 carry no body. A HEAD response's headers are those a GET would get
  (RFC 9110 §9.3.2); a 204's or a 304's are the app's own.
- A ``Transfer-Encoding: chunked`` from the app, or no ``Content-Length``, means chunked
  for an HTTP/1.1 client, and for an HTTP/1.0 one a body that ends with the connection;
  ``Content-Length`` is dropped then. Otherwise the body is exactly ``Content-Length``
  bytes: more is refused, fewer is an error at the end.
- The connection closes after the response when the request or the response said
  ``Connection: close``, the client speaks HTTP/1.0, or the body ends with the
  connection; the head then says ``Connection: close``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Final, final

from ._response import ResponseHead

__all__ = ["FramingError", "ResponseFraming"]

_CHUNK_END: Final = b"0\r\n\r\n"


class FramingError(ValueError):
    """The app's body does not match the framing its head declared."""


class _Body(enum.Enum):
    NONE = "none"  # HEAD, 204, 304
    LENGTH = "length"  # Content-Length bytes
    CHUNKED = "chunked"
    UNTIL_CLOSE = "until close"  # HTTP/1.0, no length: the close ends the body
    ENDED = "ended"  # ended, or failed: nothing more until the next start()


@final
class ResponseFraming:
    """The framing of one connection's current response: :meth:`head`, then any number of
    :meth:`data`, then :meth:`end`.

    ``keep_alive`` is the request's say (False after ``Connection: close`` or from an
    HTTP/1.0 client); :attr:`reusable` is True once a response ended cleanly on a
    connection that may carry another request.
    """

    __slots__ = ("_body", "_http11", "_keep_alive", "_method", "_remaining", "reusable")

    def __init__(self) -> None:
        self._method = b""
        self._http11 = True
        self._keep_alive = True
        self._body = _Body.NONE
        self._remaining = 0
        self.reusable = False

    def start(self, method: bytes, *, http11: bool, keep_alive: bool) -> None:
        """A new response, to a request with ``method``; ``http11``: whether the client
        understands chunked bodies."""
        self._method = method
        self._http11 = http11
        self._keep_alive = keep_alive and http11
        self._body = _Body.NONE
        self._remaining = 0
        self.reusable = False

    def head(self, version: bytes, head: ResponseHead) -> bytes:
        """The head's bytes, the status line saying ``version``; sets the body's framing."""
        fields: Iterable[tuple[bytes, bytes]] = head.fields
        extra = b""
        close = not self._keep_alive  # the request's say
        length = head.content_length
        if head.status_code in (204, 304):
            body = _Body.NONE  # and its headers as the app gave them
        elif head.chunked or length is None:
            fields = [field for field in fields if field[0].lower() != b"content-length"]
            if self._http11:
                body = _Body.CHUNKED
                extra = b"Transfer-Encoding: chunked\r\n"
            else:
                body = _Body.UNTIL_CLOSE  # (and the client is HTTP/1.0: close is set)
            if head.chunked:
                fields = [field for field in fields if field[0].lower() != b"transfer-encoding"]
        else:
            body = _Body.LENGTH
            self._remaining = length
        if close:
            # The app's own Connection: close stands as it wrote it; a close the request
            # decided on is said in lines of the framing's own, the app's keep-alive
            # gone, one line per token (as h11 wrote them).
            fields = [field for field in fields if field[0].lower() != b"connection"]
            tokens = sorted({*head.connection, b"close"} - {b"keep-alive"})
            extra += b"".join([b"Connection: %s\r\n" % token for token in tokens])
        self._body = _Body.NONE if self._method == b"HEAD" else body
        self._keep_alive = not close and b"close" not in head.connection
        lines = b"".join([b"%s: %s\r\n" % field for field in fields])
        return version + head.status + lines + extra + b"\r\n"

    @property
    def sends_body(self) -> bool:
        """Whether the response framed by :meth:`head` carries content."""
        return self._body is not _Body.NONE

    def data(self, data: bytes) -> list[bytes]:
        """The wire bytes of ``data``, the next part of the body (``data`` itself among
        them, never copied).

        Raises:
            FramingError: more bytes than the head's ``Content-Length``.
        """
        body = self._body
        if body is _Body.LENGTH:
            self._take(len(data))
            return [data]
        if body is _Body.CHUNKED:
            return [b"%x\r\n" % len(data), data, b"\r\n"] if data else []
        if body is _Body.UNTIL_CLOSE:
            return [data]
        if body is _Body.ENDED:
            raise FramingError("the response ended: no more data")
        self._fail()
        raise FramingError(f"no content allowed in this response, got {len(data)} bytes")

    def file_body(self, size: int) -> None:
        """``size`` more bytes of a Content-Length body that go on the wire otherwise (by
        sendfile), counted as :meth:`data` counts them.

        Raises:
            FramingError: more bytes than the head's ``Content-Length``, or a response
                not framed by a ``Content-Length``.
        """
        if self._body is not _Body.LENGTH:
            self._fail()
            raise FramingError("a file body needs a Content-Length response")
        self._take(size)

    def _take(self, size: int) -> None:
        if size > self._remaining:
            self._fail()
            raise FramingError("Too much data for declared Content-Length")
        self._remaining -= size

    def end(self) -> bytes:
        """The bytes that end the body; the response is complete.

        Raises:
            FramingError: fewer bytes than the head's ``Content-Length`` went.
        """
        body = self._body
        if body is _Body.LENGTH and self._remaining:
            self._fail()
            raise FramingError("Too little data for declared Content-Length")
        if body is _Body.ENDED:
            raise FramingError("the response ended already")
        self._body = _Body.ENDED
        self.reusable = self._keep_alive
        return _CHUNK_END if body is _Body.CHUNKED else b""

    def _fail(self) -> None:
        # The client has part of a response that can't be completed as framed (an app
        # that catches the error and goes on must not send bytes the client would
        # take for the rest of it, or for the next response): nothing more goes.
        self._body = _Body.ENDED
        self._keep_alive = False
