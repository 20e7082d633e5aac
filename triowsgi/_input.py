"""``wsgi.input``: the request body as a blocking file-like object for the app's thread.

The bytes come from the connection task on the Trio side through a blocking ``pull``
callable; :class:`Input` only buffers and slices them, and never reads past the body
(h11 frames it, so there is nothing past the end to read). The first read of any kind
asks the connection to send ``100 Continue`` when the client is waiting for one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol

__all__ = ["Input"]

# Lines longer than this are returned in pieces by readline(), as io does with a size;
# without a cap one newline-free body would be buffered whole.
_READLINE_CHUNK = 64 * 1024


class SocketTaker(Protocol):
    """The connection, as :meth:`Input.get_socket` hands it over (see _upgrade.py)."""

    def take_socket(self) -> Any:
        """The connection as a blocking socket, taken from the server."""


class Input:
    """The body of one request, read from a worker thread.

    ``pull()`` blocks until the next piece of the body is available and returns ``b""``
    at its end; it may raise (a timeout, a vanished client, a malformed chunk), and the
    exception reaches the app unchanged. ``prefetched`` is body already received with
    the request head; ``complete`` says it is the whole body.
    """

    def __init__(
        self,
        pull: Callable[[], bytes | bytearray],
        prefetched: bytes = b"",
        *,
        complete: bool = False,
    ) -> None:
        self._pull = pull
        # Unread body: _buffer[_pos:]. Bytes and an offset rather than a bytearray, so
        # that a body received whole is handed to the app without a copy.
        self._buffer: bytes | bytearray = prefetched
        self._pos = 0
        self._eof = complete
        # Shared and immutable until set: an empty list per request would be one more
        # object for the garbage collector while the request is in flight.
        self.hundred_continue_headers: Sequence[tuple[str, str]] = ()
        # Set by the connection: its take_socket() is what get_socket() returns.
        self.taker: SocketTaker | None = None

    def read(self, size: int | None = -1) -> bytes:
        """Read up to ``size`` bytes, or to the end of the body if ``size`` is negative."""
        if size is None or size < 0:
            while self._fill():
                pass
            size = self._available
        else:
            while self._available < size and self._fill():
                pass
        return self._take(size)

    def readline(self, size: int | None = -1) -> bytes:
        """Read one line, ending with ``b"\\n"``, or at most ``size`` bytes of it."""
        limit = _READLINE_CHUNK if size is None or size < 0 else size
        scanned = 0
        while True:
            pos = self._pos
            end = self._buffer.find(b"\n", pos + scanned, pos + limit)
            if end >= 0:
                return self._take(end + 1 - pos)
            scanned = self._available
            if scanned >= limit or not self._fill():
                return self._take(limit)

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        """Read lines until the end of the body, or until ``hint`` bytes have been read."""
        lines: list[bytes] = []
        total = 0
        for line in self:
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                break
        return lines

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def get_socket(self) -> Any:
        """eventlet's hook: the connection as a blocking socket, for an app that speaks
        another protocol on it (a WebSocket) once it has written its own ``101``. From
        then on the server writes nothing more on the connection, and closes it when
        the app returns; the app's thread holds no place in ``threads``."""
        if self.taker is None:
            raise OSError("this request's connection can't be taken over")
        return self.taker.take_socket()

    def set_hundred_continue_response_headers(
        self,
        headers: Iterable[tuple[str, str]],
        capitalize_response_headers: bool = True,
    ) -> None:
        """Headers to send with the ``100 Continue`` response (eventlet's API).

        Names are capitalised (``x-foo`` -> ``X-Foo``) unless told otherwise, as eventlet
        does whatever the server's own ``capitalize_response_headers`` says.
        """
        from ._response import capitalize  # the one place header names are rewritten

        pairs: Iterable[Any] = headers  # [name, value] lists too, as eventlet takes them
        self.hundred_continue_headers = [
            (capitalize(name) if capitalize_response_headers else name, value)
            for name, value in pairs
        ]

    def unread(self) -> bytes:
        """The bytes received and not read yet (all there is once the body is over)."""
        return bytes(self._buffer[self._pos :])

    @property
    def exhausted(self) -> bool:
        """True once the whole body has been received (whether or not the app read it)."""
        return self._eof

    def _fill(self) -> bool:
        """Append the next piece of the body to the buffer; False at the end of the body."""
        if self._eof:
            return False
        data = self._pull()
        if not data:
            self._eof = True
            return False
        buffer = self._buffer
        if isinstance(buffer, bytes):  # from now on, appending must not copy it all
            buffer = self._buffer = bytearray(buffer[self._pos :])
            self._pos = 0
        elif self._pos * 2 > len(buffer):  # mostly read: drop that part
            del buffer[: self._pos]
            self._pos = 0
        buffer += data
        return True

    @property
    def _available(self) -> int:
        return len(self._buffer) - self._pos

    def _take(self, size: int) -> bytes:
        pos = self._pos
        data = self._buffer[pos : pos + size]
        self._pos = pos + len(data)
        return data if isinstance(data, bytes) else bytes(data)
