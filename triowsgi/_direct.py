"""Direct, non-blocking reads and writes of a plain socket's descriptor.

Handing a response back to the Trio thread to send costs a thread wake-up and a trio
``send_all`` (checkpoints, a scheduler round) per batch: for a 1 MiB stream of 64 KiB
pieces that is 16 round trips, and for every response it puts the Trio thread's wake-up
between the app's return and the client's first byte. On a plain socket the worker that
produced the bytes writes them itself, with one non-blocking ``writev``; only what the
kernel does not take at once goes back to the connection task, which waits for the
socket (with ``socket_timeout``) as before. TLS streams go through ``trio.SSLStream``.
The connection task sends ``wsgi.file_wrapper`` bodies by :meth:`DirectSocket.sendfile`
(see :mod:`._files`).

Reading, the connection task tries :meth:`DirectSocket.read_nowait` before it parks an
idle connection in ``trio.lowlevel.wait_readable``: a shallower wait than
``receive_some`` (less memory per idle connection) that costs nothing when the next
request is already there.

The connection task owns the socket: it is waiting on the worker while the worker
writes, and :meth:`DirectSocket.close` makes sure no write is under way or can start
once it decides to close (an abandoned worker must never write to a reused descriptor).
"""

from __future__ import annotations

import errno
import os
import threading
from typing import TypeAlias, final

import trio

from ._errors import ClientDisconnected

__all__ = ["DirectSocket", "Pieces", "direct_socket"]

Pieces: TypeAlias = "list[bytes | memoryview]"


@final
class DirectSocket:
    """Non-blocking reads (from the connection task) and writes (from any thread) of one
    socket's descriptor, until closed."""

    __slots__ = ("_closed", "_fd", "_lock")

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._lock = threading.Lock()
        self._closed = False

    def write(self, pieces: Pieces) -> Pieces:
        """Write what the socket takes now; return the rest (empty when all went).

        Raises:
            ClientDisconnected: the client is gone, or the connection was closed.
        """
        size = sum(map(len, pieces))
        if not size:
            return []
        with self._lock:
            if self._closed:
                raise ClientDisconnected("the connection was closed")
            try:
                sent = os.writev(self._fd, pieces)
            except BlockingIOError:
                return pieces
            except OSError as exc:  # EPIPE, ECONNRESET: the client went away
                raise ClientDisconnected(str(exc)) from exc
        # Nearly always all of it: then no piece is looked at again.
        return [] if sent == size else _rest(pieces, sent)

    def sendfile(self, in_fd: int, offset: int, count: int) -> int | None:
        """Send up to ``count`` bytes of the file ``in_fd`` from ``offset``, as many as the
        socket takes now; how many (0 at the file's end), or None if it takes none now.

        Raises:
            ClientDisconnected: the client is gone, or the connection was closed.
            OSError: reading the file failed.
        """
        with self._lock:
            if self._closed:  # the descriptor's number may belong to another socket now
                raise ClientDisconnected("the connection was closed")
            try:
                return os.sendfile(self._fd, in_fd, offset, count)
            except BlockingIOError:
                return None
            except (ConnectionError, TimeoutError) as exc:  # EPIPE, ECONNRESET, ETIMEDOUT
                raise ClientDisconnected(str(exc)) from exc
            except OSError as exc:
                if exc.errno == errno.ENOTCONN:
                    raise ClientDisconnected(str(exc)) from exc
                raise

    def read_nowait(self, max_bytes: int) -> bytes | None:
        """What the client sent, if anything has arrived (``b""`` at EOF); None if not.

        Raises:
            ClientDisconnected: the client is gone, or the connection was closed.
        """
        if self._closed:
            raise ClientDisconnected("the connection was closed")
        try:
            return os.read(self._fd, max_bytes)
        except BlockingIOError:
            return None
        except OSError as exc:
            raise ClientDisconnected(str(exc)) from exc

    def close(self) -> None:
        """Stop writing: when this returns no write is under way and none will start."""
        with self._lock:
            self._closed = True


def _rest(pieces: Pieces, sent: int) -> Pieces:
    for index, piece in enumerate(pieces):
        if sent < len(piece):
            return [memoryview(piece)[sent:], *(rest for rest in pieces[index + 1 :] if rest)]
        sent -= len(piece)
    return []


def direct_socket(stream: trio.abc.Stream) -> DirectSocket | None:
    """Direct access to a plain ``trio.SocketStream``; None where there is no ``writev``
    (Windows) or the stream is not a bare socket (TLS)."""
    if type(stream) is not trio.SocketStream or not hasattr(os, "writev"):
        return None
    return DirectSocket(stream.socket.fileno())
