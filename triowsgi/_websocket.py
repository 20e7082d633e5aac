"""``triowsgi.websocket``: eventlet.websocket's API on wsproto, for blocking and Trio handlers.

:class:`WebSocketWSGI` is a WSGI app. It checks the opening handshake
(``_websocket_handshake.py``), then hands the connection to the handler in one of two
ways, picked by the handler's kind:

- a plain function gets a blocking :class:`WebSocket` over ``wsgi.input.get_socket()``,
  in the app's own thread (which then holds no place in the server's ``threads``), as on
  eventlet;
- an ``async def`` function gets an :class:`AsyncWebSocket` over the stream that
  ``environ["triowsgi.take_stream"]`` hands to the connection's own Trio task: the app's
  thread returns at once and the WebSocket holds no thread at all.

Both are thin shells over the same sans-I/O :class:`WebSocketProtocol`
(``_websocket_protocol.py``), which owns the protocol; the shells own the I/O, the locks
and the one timer of a WebSocket, the wait for the client's answer to our close frame.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Final, Protocol, TypeAlias, final, overload

import trio

from ._websocket_handshake import Accepted, HandshakeRefused, OriginChecker, negotiate
from ._websocket_protocol import ConnectionClosed, Phase, WebSocketProtocol, WSMessage

__all__ = [
    "DEFAULT_MAX_FRAME_LENGTH",
    "AsyncWebSocket",
    "ConnectionClosed",
    "WebSocket",
    "WebSocketWSGI",
]

# eventlet.websocket's default limit on a received message (after inflating): bigger
# ones are refused with close code 1009.
DEFAULT_MAX_FRAME_LENGTH: Final = 8 * 1024 * 1024
# How long our close frame waits for the client's before the connection is dropped
# anyway (RFC 6455 §7.1.1 asks for the answer, not for waiting on it for ever).
CLOSE_TIMEOUT: Final = 5.0
# The most read from the connection at once; the server's own reads use the same size.
RECEIVE_SIZE: Final = 64 * 1024
# RFC 6455 §7.4.1: the codes this module closes with.
NORMAL_CLOSURE: Final = 1000
GOING_AWAY: Final = 1001
INTERNAL_ERROR: Final = 1011
# A handler that ends with one of these just lost its client (eventlet's
# ACCEPTABLE_CLIENT_ERRORS, ECONNRESET and EPIPE; ConnectionClosed is a BrokenPipeError).
CLIENT_GONE: Final = (BrokenPipeError, ConnectionResetError)
TRIO_STREAM_GONE: Final = (trio.BrokenResourceError, trio.ClosedResourceError)


class BlockingSocket(Protocol):
    """What ``wsgi.input.get_socket()`` returns, as far as :class:`WebSocket` uses it."""

    def recv(self, bufsize: int, /) -> bytes: ...
    def sendall(self, data: bytes, /) -> None: ...
    def settimeout(self, value: float | None, /) -> None: ...
    def gettimeout(self) -> float | None: ...
    def close(self) -> None: ...


class Tunnel(Protocol):
    """What ``triowsgi.take_stream`` hands its handler, as far as :class:`AsyncWebSocket`
    uses it."""

    closing: trio.Event

    async def receive_some(self, max_bytes: int | None = None, /) -> bytes: ...
    async def send_all(self, data: bytes, /) -> None: ...
    async def aclose(self) -> None: ...


@final
class WebSocket:
    """A WebSocket for a blocking handler (eventlet.websocket's), in the app's thread.

    Attributes:
        path: the request's ``PATH_INFO``.
        protocol: the subprotocol agreed on, or ``None``.
        origin: the request's ``Origin`` header, or ``None``.
        environ: the request's WSGI environ.
        version: ``13``, the protocol version (RFC 6455).
        socket: the connection's blocking socket (``wsgi.input.get_socket()``).

    :meth:`send` may be called from any thread, concurrently; :meth:`wait` from one
    thread at a time. Pings are answered inside :meth:`wait`. :class:`WebSocketWSGI`
    makes it, once the handshake is done.
    """

    def __init__(
        self,
        sock: BlockingSocket,
        environ: dict[str, Any],
        accepted: Accepted,
        max_frame_length: int = DEFAULT_MAX_FRAME_LENGTH,
    ) -> None:
        self.socket = sock
        self.environ = environ
        self.path: str | None = environ.get("PATH_INFO")
        self.origin: str | None = environ.get("HTTP_ORIGIN")
        self.protocol = accepted.subprotocol
        self.version = 13
        self._core = WebSocketProtocol(accepted.deflate, max_frame_length)
        # Every use of the core, and every send: frames go out whole and in order.
        self._lock = threading.Lock()
        self._reading = threading.Lock()  # one thread reads the socket at a time
        self._closed = threading.Event()  # the core reached Phase.CLOSED
        self._close_deadline: float | None = None  # time.monotonic() of giving up

    @property
    def websocket_closed(self) -> bool:
        """``True`` once a close frame was sent or received (eventlet's attribute)."""
        return self._core.phase is not Phase.OPEN

    def send(self, message: str | bytes) -> None:
        """Send one message: ``str`` as a text message, ``bytes`` as a binary one.

        Raises:
            ConnectionClosed: the WebSocket is closed, or the client went away.
            TypeError: ``message`` is neither ``str`` nor bytes-like.
        """
        with self._lock:
            self._send(self._core.send(message))

    def wait(self) -> WSMessage | None:
        """The next message (``str`` for text, ``bytes`` for binary), or ``None`` once
        the WebSocket is closed (by either side, or by the connection ending).

        Raises:
            TimeoutError: only when the app set a timeout on :attr:`socket`.
        """
        with self._reading:
            return self._next_message()

    def close(self, close_data: tuple[int, str] | None = None) -> None:
        """Close the WebSocket: send a close frame with ``close_data``, ``(code,
        reason)`` (default ``(1000, "")``), wait a few seconds at most for the client's
        answer, then close the connection. Messages not yet read are dropped. Returning
        from the handler does this with 1000 by itself."""
        code, reason = close_data if close_data is not None else (NORMAL_CLOSURE, "")
        with self._lock:
            self._core.drop_messages()
            self._send_quietly(self._core.close(code, reason))
            deadline = self._close_deadline
        # Another thread may be in wait(): it reads the client's answer, then lets go.
        remaining = 0.0 if deadline is None else max(deadline - time.monotonic(), 0.0)
        if self._reading.acquire(timeout=remaining):
            try:
                self._next_message()  # None once the answer came (or the time is up)
            finally:
                self._reading.release()
        self._abort()

    def _next_message(self) -> WSMessage | None:
        while True:
            with self._lock:
                message = self._core.next_message()
                if message is not None or self._core.phase is Phase.CLOSED:
                    return message
                deadline = self._close_deadline
            data = self._recv(deadline)
            with self._lock:
                reply = self._core.receive_data(data)
                if reply or self._core.phase is not Phase.OPEN:
                    self._send_quietly(reply)

    def _recv(self, deadline: float | None) -> bytes:
        if deadline is None:
            try:
                return self.socket.recv(RECEIVE_SIZE)
            except TimeoutError:
                raise  # the app's own timeout on the socket: its to handle, as eventlet's
            except OSError:
                return b""  # reset, or closed by _abort(): the end of the client's data
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return b""
        previous = self.socket.gettimeout()
        try:
            self.socket.settimeout(remaining)
            return self.socket.recv(RECEIVE_SIZE)
        except OSError:
            return b""  # a timeout too: the client never answered our close frame
        finally:
            self.socket.settimeout(previous)

    def _send(self, data: bytes) -> None:
        # Called with self._lock held, after each use of the core that may send.
        if self._close_deadline is None and self._core.phase is not Phase.OPEN:
            self._close_deadline = time.monotonic() + CLOSE_TIMEOUT
        if self._core.phase is Phase.CLOSED:
            self._closed.set()
        if not data:
            return
        try:
            self.socket.sendall(data)
        except OSError as exc:
            self._core.receive_data(b"")  # the connection is gone: so is the WebSocket
            self._closed.set()
            raise ConnectionClosed(f"the client went away: {exc}") from exc

    def _send_quietly(self, data: bytes) -> None:
        # A pong or a close frame for a client that left: nobody to tell.
        with contextlib.suppress(ConnectionClosed):
            self._send(data)

    def _abort(self) -> None:
        with contextlib.suppress(OSError):
            self.socket.close()

    def _going_away(self) -> None:
        # The server's graceful shutdown began (a new thread, from sock.on_shutdown):
        # close with 1001, which wait() returns None after; a client that doesn't answer
        # in time has its connection closed, which wakes wait() all the same.
        with self._lock:
            self._send_quietly(self._core.close(GOING_AWAY, "server shutting down"))
        if not self._closed.wait(CLOSE_TIMEOUT):
            self._abort()


@final
class AsyncWebSocket:
    """A WebSocket for an ``async def`` handler, in the connection's own Trio task.

    Attributes:
        path, protocol, origin, environ, version: as :class:`WebSocket`'s.

    :meth:`send` may be called from several tasks at once; :meth:`receive` from one at
    a time. Pings are answered inside :meth:`receive`. When the server's graceful
    shutdown begins the WebSocket is closed with 1001 at once: :meth:`receive` returns
    ``None`` when the client answers (or after a few seconds) and :meth:`send` raises
    :class:`ConnectionClosed`. :class:`WebSocketWSGI` makes it, once the handshake is
    done.
    """

    __slots__ = (
        "_core", "_deadline", "_receiving", "_scope", "_send_lock", "_tunnel",
        "environ", "origin", "path", "protocol", "version",
    )  # fmt: skip

    def __init__(
        self,
        tunnel: Tunnel,
        environ: dict[str, Any],
        accepted: Accepted,
        max_frame_length: int = DEFAULT_MAX_FRAME_LENGTH,
    ) -> None:
        self._tunnel = tunnel
        self.environ = environ
        self.path: str | None = environ.get("PATH_INFO")
        self.origin: str | None = environ.get("HTTP_ORIGIN")
        self.protocol = accepted.subprotocol
        self.version = 13
        self._core = WebSocketProtocol(accepted.deflate, max_frame_length)
        self._send_lock = trio.Lock()  # frames go out whole and in order
        self._receiving = trio.Lock()  # one task reads the stream at a time
        self._scope: trio.CancelScope | None = None  # the read in progress
        self._deadline = math.inf  # trio.current_time() of giving up on the client

    async def send(self, message: str | bytes) -> None:
        """Send one message: ``str`` as a text message, ``bytes`` as a binary one.

        Raises:
            ConnectionClosed: the WebSocket is closed, or the client went away (or
                took nothing for the server's ``send_timeout``).
            TypeError: ``message`` is neither ``str`` nor bytes-like.
        """
        lock = self._send_lock
        if lock.locked():
            async with lock:
                await self._send(self._core.send(message))
            return
        # Not `async with`: its acquire is a trip through the scheduler even when the
        # lock is free (measured: a tenth of an echo's time), and the send checkpoints.
        lock.acquire_nowait()
        try:
            await self._send(self._core.send(message))
        finally:
            lock.release()

    async def receive(self) -> WSMessage | None:
        """The next message (``str`` for text, ``bytes`` for binary), or ``None`` once
        the WebSocket is closed (by either side, or by the connection ending)."""
        async with self._receiving:
            return await self._next_message()

    async def close(self, code: int = NORMAL_CLOSURE, reason: str = "") -> None:
        """Close the WebSocket: send a close frame with ``code`` and ``reason``, and wait
        a few seconds at most for the client's answer. Messages not yet received are
        dropped. Returning from the handler does this with 1000 by itself."""
        self._core.drop_messages()
        await self._start_close(code, reason)
        # Another task may be in receive(): it reads the client's answer, then lets go.
        # Its read began while the WebSocket was open, with no time limit (see
        # _next_message): if the client has not answered by the deadline, it is ended.
        with trio.move_on_at(self._deadline) as waiting:
            await self._receiving.acquire()
        if waiting.cancelled_caught:
            await self._tunnel.aclose()
            return
        try:
            await self._next_message()
        finally:
            self._receiving.release()

    def __aiter__(self) -> AsyncWebSocket:
        return self

    async def __anext__(self) -> WSMessage:
        # receive()'s body, not a call to it: an idle WebSocket waits here, and each
        # frame on its stack is kept for as long as it is idle. The lock as in send().
        lock = self._receiving
        if lock.locked():
            async with lock:
                message = await self._next_message()
        else:
            lock.acquire_nowait()
            try:
                message = await self._next_message()
            finally:
                lock.release()
        if message is None:
            raise StopAsyncIteration
        return message

    async def _next_message(self) -> WSMessage | None:
        core = self._core
        while True:
            message = core.next_message()
            if message is not None or core.phase is Phase.CLOSED:
                return message
            # b"" if the connection ended, or if the client did not answer our close
            # frame in time (the read is cancelled at self._deadline).
            data = b""
            try:
                if self._deadline == math.inf:
                    # Open: no time limit, so no cancel scope (5 us a read, a tenth of
                    # an echo). A close begun by another task meanwhile bounds this read
                    # from there (close(), _watch_closing()).
                    data = await self._tunnel.receive_some(RECEIVE_SIZE)
                else:
                    with trio.CancelScope(deadline=self._deadline) as self._scope:
                        data = await self._tunnel.receive_some(RECEIVE_SIZE)
            except TRIO_STREAM_GONE:
                pass
            finally:
                self._scope = None
            reply = core.receive_data(data)
            if reply or core.phase is not Phase.OPEN:
                async with self._send_lock:
                    await self._send_quietly(reply)

    async def _start_close(self, code: int, reason: str) -> None:
        async with self._send_lock:
            await self._send_quietly(self._core.close(code, reason))

    async def _send(self, data: bytes) -> None:
        # Called with self._send_lock held, after each use of the core that may send.
        if self._deadline == math.inf and self._core.phase is not Phase.OPEN:
            self._deadline = trio.current_time() + CLOSE_TIMEOUT
            if self._scope is not None:
                self._scope.deadline = self._deadline
        if not data:
            return
        try:
            await self._tunnel.send_all(data)
        except TRIO_STREAM_GONE as exc:
            self._core.receive_data(b"")  # the connection is gone: so is the WebSocket
            raise ConnectionClosed(f"the client went away: {exc}") from exc

    async def _send_quietly(self, data: bytes) -> None:
        # A pong or a close frame for a client that left: nobody to tell.
        with contextlib.suppress(ConnectionClosed):
            await self._send(data)

    async def _watch_closing(self) -> None:
        await self._tunnel.closing.wait()
        await self._start_close(GOING_AWAY, "server shutting down")
        # The handler's read in progress may have no time limit (see _next_message):
        # the client has until the deadline to answer, then the connection ends.
        await trio.sleep_until(self._deadline)
        if self._core.phase is not Phase.CLOSED:
            await self._tunnel.aclose()


BlockingHandler: TypeAlias = Callable[[WebSocket], object]
AsyncHandler: TypeAlias = Callable[[AsyncWebSocket], Awaitable[object]]
Handler: TypeAlias = BlockingHandler | AsyncHandler


@final
class WebSocketWSGI:
    """A WSGI app that serves WebSockets with ``handler(ws)``; eventlet.websocket's.

    ``handler`` is either a plain function, called with a :class:`WebSocket` in the
    app's thread, or an ``async def`` function, awaited with an :class:`AsyncWebSocket`
    in the connection's Trio task (no thread held). The WebSocket is closed (1000) when
    the handler returns, or ends with an ``OSError`` of a client that went away; any
    other exception closes it with 1011 and reaches the server's error log. Use it as a
    decorator, as on eventlet::

        @WebSocketWSGI
        def echo(ws):
            while (message := ws.wait()) is not None:
                ws.send(message)

        trio.run(triowsgi.serve, echo, 8090)

    A request that is not a WebSocket handshake gets ``400`` (so do hixie-76 handshakes:
    only RFC 6455 is spoken), one of another protocol version ``426``, one whose origin
    ``origin_checker(host, origin)`` refuses ``403``. permessage-deflate (RFC 7692) is
    agreed when the client offers it. A received message bigger than
    ``max_frame_length`` bytes (after inflating) closes the WebSocket with 1009.
    """

    def __init__(self, handler: Handler, max_frame_length: int = DEFAULT_MAX_FRAME_LENGTH) -> None:
        self.handler = handler
        self.max_frame_length = max_frame_length
        self.supported_protocols: Sequence[str] = []
        self.origin_checker: OriginChecker | None = None
        # eventlet's option to speak the hixie drafts; accepted, but never in effect.
        self.support_legacy_versions = False

    @overload
    @classmethod
    def configured(
        cls,
        handler: None = None,
        supported_protocols: Sequence[str] | None = None,
        origin_checker: OriginChecker | None = None,
        support_legacy_versions: bool = False,
        max_frame_length: int = DEFAULT_MAX_FRAME_LENGTH,
    ) -> Callable[[Handler], WebSocketWSGI]: ...

    @overload
    @classmethod
    def configured(
        cls,
        handler: Handler,
        supported_protocols: Sequence[str] | None = None,
        origin_checker: OriginChecker | None = None,
        support_legacy_versions: bool = False,
        max_frame_length: int = DEFAULT_MAX_FRAME_LENGTH,
    ) -> WebSocketWSGI: ...

    @classmethod
    def configured(
        cls,
        handler: Handler | None = None,
        supported_protocols: Sequence[str] | None = None,
        origin_checker: OriginChecker | None = None,
        support_legacy_versions: bool = False,
        max_frame_length: int = DEFAULT_MAX_FRAME_LENGTH,
    ) -> Callable[[Handler], WebSocketWSGI] | WebSocketWSGI:
        """eventlet's: a decorator that makes a configured :class:`WebSocketWSGI` of a
        handler (or, given ``handler``, that app at once).

        Args:
            supported_protocols: subprotocols the server speaks; of those the client
                offers, the first it lists that is here is agreed (``ws.protocol``).
            origin_checker: ``origin_checker(host, origin) -> bool``, eventlet's order:
                the ``Host`` header and the ``Origin`` header (``""`` if none); false
                answers the handshake with ``403``.
            support_legacy_versions: accepted for eventlet's sake; the hixie drafts are
                never spoken (their handshakes get ``400``).
            max_frame_length: the largest message received, in bytes.
        """

        def decorator(handler: Handler) -> WebSocketWSGI:
            app = cls(handler, max_frame_length)
            app.supported_protocols = list(supported_protocols or ())
            app.origin_checker = origin_checker
            app.support_legacy_versions = support_legacy_versions
            return app

        return decorator if handler is None else decorator(handler)

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        """The WSGI app: a refused handshake is answered with its status; an accepted
        one is served by the handler (see the class's docstring), with no response of
        the server's."""
        try:
            accepted = negotiate(environ, self.supported_protocols, self.origin_checker)
        except HandshakeRefused as refused:
            body = f"{refused}\n".encode()
            start_response(
                refused.status,
                [
                    ("Content-Type", "text/plain; charset=utf-8"),
                    ("Content-Length", str(len(body))),
                    ("Connection", "close"),
                    *refused.headers,
                ],
            )
            return [body]
        if _is_async(self.handler):
            return self._hand_to_trio(environ, accepted)
        return self._serve_blocking(environ, accepted)

    def _serve_blocking(self, environ: dict[str, Any], accepted: Accepted) -> Iterable[bytes]:
        get_socket = getattr(environ["wsgi.input"], "get_socket", None)
        if get_socket is None:
            raise RuntimeError("WebSocketWSGI needs a server with wsgi.input.get_socket()")
        sock = get_socket()
        try:
            sock.sendall(accepted.response)
        except OSError:
            return []  # the client left before the handshake was done: nothing to serve
        ws = WebSocket(sock, environ, accepted, self.max_frame_length)
        on_shutdown = getattr(sock, "on_shutdown", None)  # triowsgi's; other servers' lack it
        if on_shutdown is not None:
            on_shutdown(ws._going_away)
        handler: BlockingHandler = self.handler  # type: ignore[assignment]
        try:
            handler(ws)
        except CLIENT_GONE:
            pass
        except BaseException:
            ws.close((INTERNAL_ERROR, "internal error"))
            raise
        ws.close()
        return []

    def _hand_to_trio(self, environ: dict[str, Any], accepted: Accepted) -> Iterable[bytes]:
        take_stream = environ.get("triowsgi.take_stream")
        if take_stream is None:
            raise RuntimeError("async WebSocket handlers need triowsgi's server")
        handler: AsyncHandler = self.handler  # type: ignore[assignment]
        take_stream(
            functools.partial(serve_async, handler, environ, accepted, self.max_frame_length)
        )
        return []


async def serve_async(
    handler: AsyncHandler,
    environ: dict[str, Any],
    accepted: Accepted,
    max_frame_length: int,
    tunnel: Tunnel,
) -> None:
    """Complete the handshake on ``tunnel`` and run ``handler`` on it, with a watcher
    that closes the WebSocket (1001) when the server's graceful shutdown begins."""
    try:
        await tunnel.send_all(accepted.response)
    except TRIO_STREAM_GONE:
        return
    ws = AsyncWebSocket(tunnel, environ, accepted, max_frame_length)
    error: Exception | None = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ws._watch_closing)
        try:
            await handler(ws)
        except CLIENT_GONE:
            pass
        except Exception as exc:
            error = exc  # re-raised below, whole (a nursery would wrap it in a group)
        nursery.cancel_scope.cancel()
    if error is not None:
        await ws.close(INTERNAL_ERROR, "internal error")
        raise error
    await ws.close()


def _is_async(handler: Handler) -> bool:
    # inspect sees through functools.partial; a callable object is async by its __call__.
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
        getattr(handler, "__call__", None)  # noqa: B004
    )
