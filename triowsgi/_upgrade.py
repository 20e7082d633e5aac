"""A connection taken over by the app: eventlet's ``get_socket()`` and triowsgi's own
``take_stream``, the hooks WebSocket libraries speak their protocol through.

Once an app has taken its connection, HTTP is over on it: the server writes nothing
more, whatever the app returns, and closes the connection when the app (or the Trio
handler it handed the stream to) is done. :class:`Tunnel` is the connection's stream as
the taker sees it: bytes the server had read past the request head come first, sends
are bounded by ``send_timeout`` (a client that stopped reading is let go), reads by
nothing (a WebSocket may be quiet for hours). :class:`TakenSocket` is the same connection
as a blocking socket, for the app's thread (and any other thread but Trio's). On TLS each
call is a trip into Trio, through the tunnel; a plain TCP or unix socket is read and
written by the calling thread itself (a trip costs more than the I/O: measured 4x the
echo rate), the thread waiting in ``poll()`` where Trio would.
"""

from __future__ import annotations

import contextlib
import errno
import io
import math
import select
import socket
import threading
from collections.abc import Callable
from typing import Any, Final, final

import trio

__all__ = ["TakenSocket", "Tunnel"]

# A receive without a size reads at most this much (as the server's own reads).
RECEIVE_SIZE: Final = 64 * 1024
# On TLS a stalled send is found per slice of this size (one TLS record).
SEND_SLICE: Final = 16 * 1024


@final
class Tunnel:
    """The stream of a connection its app took over.

    ``closing`` is set when the server's graceful shutdown begins: a taker should end
    its session then (a WebSocket sends close 1001). Callbacks given to
    :meth:`on_shutdown` run then too, each in a new thread.
    """

    __slots__ = (
        "_buffered", "_callbacks", "_send_lock", "_send_timeout", "_stream", "closed",
        "closing", "plain_socket", "status",
    )  # fmt: skip

    def __init__(self, stream: trio.abc.Stream, buffered: bytes, send_timeout: float) -> None:
        self._stream = stream
        # A plain socket stream's OS socket, read and written without trio's socket
        # wrappers (as the connection does: a WebSocket echo spends 15% of its time in
        # them); None on TLS.
        sock = getattr(stream, "socket", None)
        self.plain_socket: socket.socket | None = getattr(sock, "_sock", None)
        self._buffered = buffered
        self._send_timeout = send_timeout
        self._callbacks: list[Callable[[], object]] = []
        # Apps send from several threads (simple-websocket: the app's and its reader's
        # pings); a stream takes one send at a time.
        self._send_lock = trio.StrictFIFOLock()
        self.closing = trio.Event()
        self.closed = trio.Event()  # the taker closed it
        # The status of the response head the taker wrote (for the access log).
        self.status = 0

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """The next bytes from the client, ``b""`` at its end.

        Raises:
            trio.BrokenResourceError: the connection failed (or the server closed it).
            trio.ClosedResourceError: the tunnel was closed.
        """
        size = RECEIVE_SIZE if max_bytes is None else max_bytes
        if self._buffered:
            data, self._buffered = self._buffered[:size], self._buffered[size:]
            await trio.lowlevel.checkpoint()
            return data
        sock = self.plain_socket
        if sock is None:
            received = await self._stream.receive_some(size)
            return received if isinstance(received, bytes) else bytes(received)
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            try:
                data = sock.recv(size)
            except BlockingIOError:
                pass
            else:
                # As receive_some(): the other tasks get a turn after an immediate read.
                await trio.lowlevel.cancel_shielded_checkpoint()
                return data
            while True:
                await trio.lowlevel.wait_readable(sock)
                try:
                    return sock.recv(size)
                except BlockingIOError:
                    continue
        except OSError as exc:
            raise _stream_error(exc) from exc

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Send all of ``data``; each :data:`SEND_SLICE` of it must go within
        ``send_timeout``.

        Raises:
            trio.BrokenResourceError: the client went away, or stopped reading.
        """
        self.note_sent(data)
        timeout = self._send_timeout
        sock = self.plain_socket
        if sock is not None:
            await self._send_direct(sock, data, timeout)
            return
        async with self._send_lock:
            if timeout == math.inf:
                await self._stream.send_all(data)
                return
            view = memoryview(data)
            for start in range(0, max(len(view), 1), SEND_SLICE):
                with trio.move_on_after(timeout) as scope:
                    await self._stream.send_all(view[start : start + SEND_SLICE])
                if scope.cancelled_caught:
                    raise trio.BrokenResourceError(f"the client took no bytes for {timeout} s")

    async def _send_direct(
        self, sock: socket.socket, data: bytes | bytearray | memoryview, timeout: float
    ) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        view = memoryview(data).cast("B")
        try:
            if not self._send_lock.locked():  # no send waiting: none to overtake
                with contextlib.suppress(BlockingIOError):
                    view = view[sock.send(view) :]
                if not view:
                    await trio.lowlevel.cancel_shielded_checkpoint()
                    return
            async with self._send_lock:
                while view:
                    with trio.move_on_after(timeout) as scope:
                        await trio.lowlevel.wait_writable(sock)
                    if scope.cancelled_caught:
                        raise trio.BrokenResourceError(f"the client took no bytes for {timeout} s")
                    try:
                        view = view[sock.send(view) :]
                    except BlockingIOError:
                        continue
        except OSError as exc:
            raise _stream_error(exc) from exc

    async def aclose(self) -> None:
        """Close the connection (the server closes it anyway once the taker is done)."""
        self.closed.set()
        await trio.aclose_forcefully(self._stream)

    def on_shutdown(self, callback: Callable[[], object]) -> None:
        """Call ``callback()`` in a new thread when the graceful shutdown begins (at
        once if it has)."""
        if self.closing.is_set():
            _in_new_thread(callback)
        else:
            self._callbacks.append(callback)

    def begin_closing(self) -> None:
        """The server is shutting down: tell the taker (in Trio)."""
        if self.closing.is_set():
            return
        self.closing.set()
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            _in_new_thread(callback)

    def take_buffered(self) -> bytes:
        """The bytes read past the head, for a reader that reads the socket itself."""
        data, self._buffered = self._buffered, b""
        return data

    def note_sent(self, data: bytes | bytearray | memoryview) -> None:
        """The first bytes the taker sends: "HTTP/1.1 101 ...", for the access log."""
        if not self.status:
            start = bytes(data[:12])
            if start[:5] == b"HTTP/" and start[9:12].isdigit():
                self.status = int(start[9:12])


def _stream_error(exc: OSError) -> trio.BrokenResourceError | trio.ClosedResourceError:
    """A socket's error as a Trio stream's."""
    if exc.errno == errno.EBADF:
        return trio.ClosedResourceError("the connection was closed")
    return trio.BrokenResourceError(str(exc))


def _in_new_thread(callback: Callable[[], object]) -> None:
    threading.Thread(target=callback, name="triowsgi shutdown callback", daemon=True).start()


@final
class TakenSocket:
    """What ``wsgi.input.get_socket()`` returns: the connection as a blocking socket, for
    any thread but Trio's. Errors are ``OSError`` s, as a socket's: a timeout is
    ``TimeoutError``; a read on a connection that failed ``ConnectionResetError``, on
    one closed ``OSError(EBADF)``; a send on either ``BrokenPipeError``; a non-blocking
    read with nothing there ``BlockingIOError``. On TLS a timeout ends the connection
    (a TLS stream can't be used after an operation on it was cancelled)."""

    def __init__(
        self,
        tunnel: Tunnel,
        token: trio.lowlevel.TrioToken,
        raw: Any,
        send_timeout: float,
    ) -> None:
        self._tunnel = tunnel
        self._token = token
        self._raw = raw  # trio's socket under the stream (TLS too), for its addresses
        self._timeout: float | None = None
        self._closed = False
        self._send_timeout = send_timeout
        self._owner = threading.get_ident()  # the app's thread: get_socket() runs in it
        self._shared = False
        # A plain socket is read and written from the calling thread: the tunnel's
        # stdlib socket (closed by the server, it fails with EBADF; its fd number is
        # never used once closed, as a reused one would be another client's).
        self._direct = tunnel.plain_socket
        self._buffered = tunnel.take_buffered() if self._direct is not None else b""

    # -- reading --------------------------------------------------------------------

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        """Up to ``bufsize`` bytes; ``b""`` once the client closed."""
        if flags:
            raise ValueError("recv() flags are not supported on this socket")
        self._note_thread()
        if self._direct is None:
            data: bytes = self._call(self._tunnel.receive_some, bufsize)
            return data
        if self._buffered:
            data, self._buffered = self._buffered[:bufsize], self._buffered[bufsize:]
            return data
        while True:
            try:
                return self._direct.recv(bufsize)
            except BlockingIOError:
                self._poll(select.POLLIN, self._timeout)

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        """As ``socket.recv_into``."""
        view = memoryview(buffer).cast("B")
        data = self.recv(nbytes or len(view), flags)
        view[: len(data)] = data
        return len(data)

    # -- writing --------------------------------------------------------------------

    def sendall(self, data: bytes | bytearray | memoryview, flags: int = 0) -> None:
        """Send all of ``data``."""
        if flags:
            raise ValueError("send flags are not supported on this socket")
        self._note_thread()
        try:
            if self._direct is None:
                self._call(self._tunnel.send_all, data)
                return
            self._tunnel.note_sent(data)
            view = memoryview(data).cast("B")
            while view:
                try:
                    view = view[self._direct.send(view) :]
                except BlockingIOError:
                    self._poll(select.POLLOUT, self._timeout, self._send_timeout)
        except (ConnectionResetError, BrokenPipeError):
            raise
        except OSError as exc:
            if isinstance(exc, (TimeoutError, BlockingIOError)):
                raise
            # A send on a connection that is gone or closed: what a socket raises then
            # (libraries catch it: simple-websocket's sends catch only this).
            raise BrokenPipeError(exc.errno or errno.EPIPE, str(exc)) from exc

    def send(self, data: bytes | bytearray | memoryview, flags: int = 0) -> int:
        """Send ``data``; all of it is sent (as ``sendall``), and its length returned."""
        self.sendall(data, flags)
        return len(data)

    # -- the rest of a socket's API ---------------------------------------------------

    def settimeout(self, value: float | None) -> None:
        """A time limit for each ``recv`` and ``send``; ``None`` blocks, ``0`` doesn't."""
        if value is not None and value < 0:
            raise ValueError("Timeout value out of range")
        self._timeout = value

    def gettimeout(self) -> float | None:
        return self._timeout

    def setblocking(self, flag: bool) -> None:
        self._timeout = None if flag else 0.0

    def getblocking(self) -> bool:
        return self._timeout != 0.0

    def getpeername(self) -> Any:
        return self._sock().getpeername()

    def getsockname(self) -> Any:
        return self._sock().getsockname()

    def fileno(self) -> int:
        """The OS socket's descriptor (not on TLS: its bytes are not the messages)."""
        if self._direct is None:
            raise io.UnsupportedOperation("fileno: the connection is TLS-wrapped")
        return self._direct.fileno()

    def shutdown(self, how: int) -> None:
        """As ``socket.shutdown``: on this connection, any ``how`` ends it."""
        self.close()

    def close(self) -> None:
        """Close the connection (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._direct is not None:
            # Another thread may be waiting in poll() on it: a shutdown wakes it.
            with contextlib.suppress(OSError):
                self._direct.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(trio.RunFinishedError):
            trio.from_thread.run(self._tunnel.aclose, trio_token=self._token)

    def on_shutdown(self, callback: Callable[[], object]) -> None:
        """triowsgi's own: ``callback()`` runs in a new thread when the server's graceful
        shutdown begins (at once if it has): time to close the session."""
        trio.from_thread.run_sync(self._tunnel.on_shutdown, callback, trio_token=self._token)

    @property
    def family(self) -> Any:
        return self._sock().family

    @property
    def type(self) -> Any:
        return self._sock().type

    def __enter__(self) -> TakenSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _sock(self) -> Any:
        if self._raw is None:
            raise OSError("the connection has no OS socket")
        return self._raw

    def _poll(self, event: int, timeout: float | None, limit: float = math.inf) -> None:
        """Wait in this thread until the plain socket is ready for ``event``, for at most
        ``timeout`` (the socket's own: ``TimeoutError``) and ``limit`` (the server's
        ``send_timeout``: the connection is given up)."""
        assert self._direct is not None
        fd = self._direct.fileno()
        if fd < 0 or self._closed:
            raise OSError(9, "Bad file descriptor")
        if timeout == 0:
            raise BlockingIOError(11, "Resource temporarily unavailable")
        wait = min(math.inf if timeout is None else timeout, limit)
        poller = select.poll()
        poller.register(fd, event)
        if poller.poll(None if wait == math.inf else wait * 1000):
            return  # ready, or failed/hung up: the next call says which
        if timeout is not None and timeout <= limit:
            raise TimeoutError("timed out")
        raise BrokenPipeError(errno.EPIPE, f"the client took no bytes for {limit} s")

    @property
    def shared(self) -> bool:
        """Whether a thread other than the app's used the socket (a library's reader):
        it may still be using it when the app returns."""
        return self._shared

    def _note_thread(self) -> None:
        if not self._shared and threading.get_ident() != self._owner:
            self._shared = True

    def _call(self, afn: Callable[..., Any], arg: Any) -> Any:
        if self._closed:
            raise OSError(9, "Bad file descriptor")  # as a closed socket
        timeout = self._timeout
        try:
            return trio.from_thread.run(_bounded, afn, arg, timeout, trio_token=self._token)
        except trio.TooSlowError:
            if timeout == 0:
                raise BlockingIOError(11, "Resource temporarily unavailable") from None
            raise TimeoutError("timed out") from None
        except trio.ClosedResourceError as exc:
            raise OSError(9, "Bad file descriptor") from exc
        except (trio.BrokenResourceError, trio.BusyResourceError, trio.RunFinishedError) as exc:
            raise ConnectionResetError(str(exc) or "connection closed") from exc


async def _bounded(afn: Callable[..., Any], arg: Any, timeout: float | None) -> Any:
    if timeout is None:
        return await afn(arg)
    if timeout == 0:
        # Non-blocking: only what is there at once. A zero deadline would cancel even a
        # read that finds bytes, so give the stream one scheduling round instead.
        with trio.move_on_after(0.001) as scope:
            result = await afn(arg)
        if scope.cancelled_caught:
            raise trio.TooSlowError
        return result
    with trio.fail_after(timeout):
        return await afn(arg)
