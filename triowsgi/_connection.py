"""One client connection's task: the request/response loop, with keep-alive and
pipelining, the app's call in a worker thread, the access log, and the connection's end
(closed, lingering after an error, evicted, expired, or taken over by the app).

The loop is driven by two state machines: h11's frames each request and its body, and
the writer's :class:`~._framing.ResponseFraming` each response; the connection is
reused when both messages ended cleanly and neither side said close. Reading, and
every limit a client meets while the server waits on it, is :mod:`._reader`'s; writing,
and the limits on a client that does not read, :mod:`._writer`'s; the app's side of a
request, :mod:`._wsgi`'s; a connection the app takes over, :mod:`._upgrade`'s.
Everything here runs in the connection's Trio task.
"""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar, final

import trio

from ._config import Config
from ._direct import direct_socket
from ._errors import ClientDisconnected, HTTPError, SocketTimeout, cut_off_status
from ._files import SENDFILE
from ._h11 import h11
from ._logging import ServerLog, access_fields
from ._proxy import TrustedProxies
from ._reader import RECEIVE_SIZE, RequestReader
from ._shutdown import Phase, Shutdown
from ._slots import Slots
from ._upgrade import TakenSocket, Tunnel
from ._workers import WorkerPool
from ._writer import ResponseWriter
from ._wsgi import (
    Batch,
    ConnectionInfo,
    Responder,
    WSGIApp,
    build_environ,
    call_posthooks,
    in_app_thread,
)

__all__ = ["ConnectionStats", "HTTPConnection", "connection_info"]

T = TypeVar("T")
TunnelHandler = Callable[[Tunnel], Awaitable[None]]

# After an error response, keep reading (and discarding) for a while before closing, so
# the client's unsent request bytes don't make the kernel reset the connection and
# destroy the response before the client reads it (RFC 9112 §9.6).
LINGER_SECONDS: Final = 2.0
LINGER_LIMIT: Final = 1024 * 1024
# The longest a result's close() may take after a response was cut short.
CLOSE_SECONDS: Final = 5.0
# After an app that took its socket returns, the longest a thread of its library still
# using the socket gets before the server closes it.
SHARED_CLOSE_SECONDS: Final = 2.0
POSTHOOK_KEYS: Final = ("triowsgi.posthooks", "eventlet.posthooks")


@dataclasses.dataclass(slots=True)
class ConnectionStats:
    """Live counters shared by a server's connections."""

    open_connections: int = 0
    requests_served: int = 0


def connection_info(stream: trio.abc.Stream) -> ConnectionInfo:
    """Addresses and scheme of a (possibly TLS-wrapped) socket stream."""
    scheme = "http"
    if isinstance(stream, trio.SSLStream):
        scheme = "https"
        stream = stream.transport_stream
    sock = getattr(stream, "socket", None)
    if sock is None:
        return ConnectionInfo(scheme, "", "", "", "")
    if sock.family == getattr(socket, "AF_UNIX", None):
        return ConnectionInfo(scheme, "unix", "", "unix", "")
    try:
        server, remote = sock.getsockname(), sock.getpeername()
    except OSError:
        # ENOTCONN: the client reset between accept() and here. Its first read will
        # say so, and it will never send a request that needs these addresses.
        return ConnectionInfo(scheme, "", "", "", "")
    # The server's address is the same for thousands of connections: one copy of it.
    server_name, server_port = sys.intern(str(server[0])), sys.intern(str(server[1]))
    return ConnectionInfo(scheme, server_name, server_port, str(remote[0]), str(remote[1]))


@final
class HTTPConnection:
    """Serves requests on one stream until the client or the framing ends the connection,
    or the app takes the connection over.

    The connection's task and its life: the loop, the app's call, the access log,
    shutdown's and the slots' hooks, the take-over and the close. What it reads is its
    :class:`RequestReader`'s, what it writes its :class:`ResponseWriter`'s."""

    # Thousands of these sit idle on a busy server: no per-instance __dict__.
    __slots__ = (
        "_app", "_config", "_direct", "_evicted", "_http10_only", "_info", "_log",
        "_proxies", "_reader", "_responder", "_shutdown", "_slot", "_slots", "_stats",
        "_stream", "_taken", "_tunnel", "_tunnel_handler", "_workers", "_writer", "expired",
    )  # fmt: skip

    def __init__(
        self,
        stream: trio.abc.Stream,
        app: WSGIApp,
        config: Config,
        *,
        log: ServerLog,
        workers: WorkerPool,
        stats: ConnectionStats,
        shutdown: Shutdown,
        proxies: TrustedProxies,
        slots: Slots,
        slot: object,
    ) -> None:
        self._stream = stream
        self._direct = direct_socket(stream)
        self._app = app
        self._config = config
        self._log = log
        self._workers = workers
        self._stats = stats
        self._shutdown = shutdown
        self._slots = slots
        self._slot = slot  # what slots.acquire() took for this connection
        self._info = connection_info(stream)
        self._proxies = proxies if proxies else None  # one test per request, not a call
        self._writer = ResponseWriter(stream, self._direct, config, workers)
        self._reader = RequestReader(
            stream,
            self._direct,
            config,
            owner=self,
            slots=slots,
            log=log,
            send=self._writer.send_all,
            workers=workers,
        )
        self._writer.reader = self._reader
        self._http10_only = config.max_http_version == "HTTP/1.0"
        self._evicted = False
        self.expired = False  # closed by Slots.expire(): no request head in time
        # Taken over by the app (see _upgrade.py): HTTP is over on this connection.
        self._responder: Responder | None = None  # the request being answered
        self._tunnel: Tunnel | None = None
        self._taken: TakenSocket | None = None  # get_socket()'s
        self._tunnel_handler: TunnelHandler | None = None  # take_stream()'s

    @property
    def phase(self) -> Phase:
        """What the connection is doing, as far as shutdown is concerned."""
        return self._reader.phase

    @property
    def peer(self) -> str:
        """The client's address and port, for the log."""
        return f"{self._info.remote_addr}:{self._info.remote_port}"

    async def run(self) -> None:
        """The connection's task: serve until the connection ends, then give its slot
        back. Never raises: not for anything the client does, and a bug of ours costs
        this connection only, never the server."""
        # All of it in this one coroutine, the task's first: thousands of idle
        # connections each keep no frame of a wrapper, nor of a helper for the wait.
        self._stats.open_connections += 1
        self._shutdown.add(self)
        try:
            try:
                await self._reader.handshake()
                while True:
                    try:
                        request = await self._reader.read_request()
                    except HTTPError as exc:
                        await self._refuse(exc)
                        break
                    if request is None:
                        break
                    # Served here, not in a helper: a coroutine per request is one more
                    # object in flight for the garbage collector (see WorkerPool.run).
                    self._reader.phase = Phase.BUSY
                    await self._respond(request)
                    del request  # an idle (or taken) connection keeps nothing of it
                    if self._tunnel is not None or not await self._next_cycle():
                        break
                    if self._shutdown.closing:
                        break
                if self._tunnel_handler is not None:
                    await self._run_tunnel_handler()
            except ClientDisconnected:
                if not self._evicted:
                    self._log.debug(f"connection from {self.peer} closed by the client")
            except SocketTimeout as exc:
                self._log.debug(f"connection from {self.peer} timed out: {exc}")
            finally:
                await self._close()
        except Exception as exc:
            self._log.exception("internal error serving a connection", exc)
        finally:
            self._shutdown.discard(self)
            self._stats.open_connections -= 1
            self._slots.release(self._slot)

    def abort(self) -> None:
        """Close the connection now (at shutdown): a wait on it ends with the stream
        closed. Synchronous, so that shutdown can close every idle connection at once."""
        if self._direct is not None:
            self._direct.close()
        sock = _raw_socket(self._stream)
        if sock is not None:
            if self._taken is not None:
                # An app thread may be waiting in poll() on it: a shutdown wakes it (a
                # close alone would not).
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def evict(self) -> None:
        """Close the connection to free its slot for a new client (see :mod:`._slots`)."""
        self._evicted = True
        self.abort()

    def expire(self) -> None:
        """Close the connection: it waited for a request head past its deadline (see
        :mod:`._slots`); its reader says so in the log."""
        self.expired = True
        self.abort()

    async def _refuse(self, exc: HTTPError) -> None:
        """Answer a request head the server refuses; the connection then closes."""
        self._log.debug(f"bad request from {self.peer}: {exc.status} {exc}")
        await self._writer.send_error(exc.status)

    # -- taken over by the app (see _upgrade.py) --------------------------------------

    def take_socket(self) -> TakenSocket:
        """``wsgi.input.get_socket()``, in the app's thread."""
        if self._taken is None:
            responder = self._take()
            assert self._tunnel is not None
            self._taken = TakenSocket(
                self._tunnel,
                self._workers.token,
                _raw_socket(self._stream),
                self._writer.send_timeout,
            )
            responder.taken = True
            # Its thread is the connection's handler now, for as long as it likes.
            self._workers.detach()
        return self._taken

    def _taken_status(self, responder: Responder) -> int:
        """For the access log: the status of the head the app wrote on the taken
        connection, or gave to start_response; else 101 (a handler writes it later)."""
        if self._tunnel is not None and self._tunnel.status:
            return self._tunnel.status
        status = responder.status if isinstance(responder.status, str) else ""
        return int(status[:3]) if status[:3].isdigit() else 101

    def _take_stream(self, handler: TunnelHandler) -> None:
        """``environ["triowsgi.take_stream"]``, in the app's thread: ``await
        handler(tunnel)`` in this task once the app returns."""
        if self._taken is not None or self._tunnel_handler is not None:
            raise RuntimeError("the connection was already taken over")
        self._take().taken = True
        self._tunnel_handler = handler

    def _take(self) -> Responder:
        responder = self._responder
        if responder is None or self._reader.response_started or responder.head_sent:
            raise OSError("the connection can't be taken: its response has started")
        self._tunnel = Tunnel(self._stream, self._reader.hand_over(), self._writer.send_timeout)
        if self._direct is not None:
            self._direct.close()  # the server's own reads and writes are over
        if self._shutdown.closing:
            trio.from_thread.run_sync(self.going_away, trio_token=self._workers.token)
        return responder

    def _set_idle(self) -> None:
        """``environ["eventlet.set_idle"]``, in the app's thread: the connection no
        longer holds up a graceful shutdown."""
        trio.from_thread.run_sync(self._idle, trio_token=self._workers.token)

    def _idle(self) -> None:
        self._reader.phase = Phase.IDLE
        if self._shutdown.closing:
            self.abort()

    def going_away(self) -> None:
        """The graceful shutdown began: the taker is told (see :class:`Tunnel`)."""
        if self._tunnel is not None:
            self._tunnel.begin_closing()

    async def _run_tunnel_handler(self) -> None:
        handler, self._tunnel_handler = self._tunnel_handler, None
        assert handler is not None and self._tunnel is not None
        try:
            await handler(self._tunnel)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self._log.debug(f"connection from {self.peer} taken over, then lost: {exc}")
        except Exception as exc:
            self._log.exception(f"error in the connection handler for {self.peer}", exc)

    # -- responding -----------------------------------------------------------------

    async def _respond(self, request: h11.Request) -> None:
        self._writer.start(
            request.method,
            http11=request.http_version == b"1.1",
            keep_alive=not self._reader.client_closes,
        )
        body = await self._reader.open_body()
        environ = build_environ(request, self._info, self._config.environ, body)
        # The app's thread is not one of Trio's: this is what it passes as trio_token=
        # to call back into the server's Trio loop (trio.from_thread.run and friends).
        environ["triowsgi.trio_token"] = self._workers.token
        environ["eventlet.set_idle"] = self._set_idle
        environ["triowsgi.take_stream"] = self._take_stream
        body.taker = self
        if self._proxies is not None:
            self._proxies.apply(environ)
        responder = Responder(
            self._app,
            environ,
            method=request.method,
            minimum_chunk_size=self._config.minimum_chunk_size,
            capitalize_names=self._config.capitalize_response_headers,
            channel=self,
            sendfile=SENDFILE and self._direct is not None,
        )
        self._responder = responder
        # Counted before the app runs: a client that has its response sees itself counted.
        self._stats.requests_served += 1
        started = time.perf_counter()
        status = 0
        try:
            status = await self._run_app(responder)
        except BaseException as exc:
            # Cut off before a status was sent: the log says why (499, 408, 503).
            status = responder.status_code or cut_off_status(exc)
            raise
        finally:
            self._responder = None
            # Also when the client went away or the server is stopping: posthooks are
            # shielded, and the request did reach the app, so it is logged.
            finished = time.perf_counter()
            hooks = _posthooks(environ)
            if hooks:
                # No shield of their own: the request's in-flight scope already protects
                # them from the server's cancellation, and the grace period bounds them.
                await self._in_thread(call_posthooks, hooks, environ, self._log)
            self._log_access(request, environ, status or responder.status_code, started, finished)

    def must_close(self) -> bool:
        """Whether the connection ends with the response being built (its head says
        so)."""
        # A client still waiting for 100 Continue may or may not send its body: the
        # connection's framing is unknowable, so it ends with this response.
        return (
            not self._config.keepalive
            or self._shutdown.closing
            or self._http10_only
            or self._reader.conn.they_are_waiting_for_100_continue
        )

    async def _run_app(self, responder: Responder) -> int:
        """Run the app and send its response; the status code sent (for the access log)."""
        writer = self._writer
        try:
            # The function and its arguments, not bound methods: see WorkerPool.run.
            done, unsent = await self._in_thread(ResponseWriter.produce, writer, responder, True)
            if responder.taken:
                return self._taken_status(responder)
            while True:
                await writer.send_pieces(unsent)
                if done:
                    return responder.status_code
                if not writer.sends_body:  # HEAD: the head is all the client gets
                    await self._in_thread(responder.close)
                    await writer.end_message()
                    return responder.status_code
                if responder.file is not None:  # wsgi.file_wrapper: by sendfile
                    await self._send_file(responder)
                    return responder.status_code
                done, unsent = await self._in_thread(
                    ResponseWriter.produce, writer, responder, False
                )
        except (ClientDisconnected, SocketTimeout, trio.Cancelled):
            if self._direct is not None:
                # A worker abandoned mid-stream must write nothing more: once the
                # iterable is closed under it, it would frame the end of a complete
                # response, and the client would take a cut-off body for a whole one.
                self._direct.close()
            await self._close_result(responder)
            raise
        except Exception as exc:
            return await self._app_failed(exc, responder)

    def send_from_thread(self, batch: Batch) -> None:
        """``write()``'s batch, in the app's thread: see
        :meth:`ResponseWriter.send_from_thread`."""
        self._writer.send_from_thread(batch)

    def _in_thread(self, fn: Callable[..., T], *args: Any) -> Awaitable[T]:
        # Abandoned on cancellation: only the shutdown grace period cancels app work, and
        # an app stuck forever must not hold the server's exit. Not a coroutine itself:
        # every resumption of the task passes through each frame of its await chain.
        return self._workers.run(in_app_thread, fn, *args)

    async def _close_result(self, responder: Responder) -> None:
        """The iterable's ``close()`` after the response was cut short."""
        with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_SECONDS):
            try:
                # Not under the `threads` limit: when the grace period ran out, stuck app
                # calls may hold every token, and waiting for one would stall shutdown.
                await trio.to_thread.run_sync(
                    in_app_thread, responder.close, abandon_on_cancel=True
                )
            except Exception as exc:
                self._log.exception("error closing the application's iterable", exc)

    async def _app_failed(self, exc: Exception, responder: Responder) -> int:
        if responder.taken:
            # The connection is the app's: nothing can be sent on it.
            if _is_eventlet_probe(exc):
                self._log.debug(f"the app for {self.peer} looked for eventlet: {exc}")
            else:
                self._log.exception(f"error in the application for {self.peer}", exc)
            return self._taken_status(responder)
        if isinstance(exc, HTTPError):
            # A malformed or oversized body, met by the app's read and let through: the
            # client's fault, logged as a bad request is, so that no client can fill the
            # error log with tracebacks at will.
            self._log.debug(f"bad request body from {self.peer}: {exc.status} {exc}")
        else:
            self._log.exception(f"error in the application for {self.peer}", exc)
        if self._reader.response_started:
            # The client can't be told with a status any more; an incomplete body and a
            # closed connection are how HTTP signals it.
            raise ClientDisconnected("response aborted after an application error")
        status = exc.status if isinstance(exc, HTTPError) else 500
        await self._writer.send_error(status, exc if self._config.debug else None)
        return status

    async def _send_file(self, responder: Responder) -> None:
        """The rest of a ``wsgi.file_wrapper`` body, by sendfile from this task (no
        thread is held while the client reads); then the result's ``close()``."""
        try:
            await self._writer.send_file(responder)
        except (ClientDisconnected, SocketTimeout):
            raise  # _run_app closes the result
        except Exception:
            # The file ended early or could not be read: an app error (_run_app logs it
            # and closes the connection); the result is closed as the thread would.
            await self._close_result(responder)
            raise
        await self._in_thread(responder.close)
        await self._writer.end_message()

    # -- after the response ---------------------------------------------------------

    async def _next_cycle(self) -> bool:
        """Whether the connection can be reused (the reader drains what the app left of
        the body)."""
        if self._writer.failed or not self._writer.framing.reusable:
            self._reader.release_body()
            return False
        return await self._reader.next_cycle()

    def _log_access(
        self,
        request: h11.Request,
        environ: dict[str, Any],
        status: int,
        started: float,
        finished: float,
    ) -> None:
        if not self._log.access_enabled:
            return
        line = b"%s %s HTTP/%s" % (request.method, request.target, request.http_version)
        forwarded = (
            environ.get("HTTP_X_FORWARDED_FOR") if self._config.log_x_forwarded_for else None
        )
        self._log.access(
            access_fields(
                client_ip=self._info.remote_addr,
                client_port=self._info.remote_port,
                forwarded_for=forwarded,
                request_line=line.decode("latin-1"),
                status_code=status,
                body_length=self._writer.body_bytes,
                started=started,
                finished=finished,
            )
        )

    async def _close(self) -> None:
        """Close the stream; after an abrupt end, linger so the client reads our answer."""
        if self._tunnel is not None:
            if self._taken is not None and self._taken.shared:
                # A library's own thread used the socket (simple-websocket's reader): it
                # may have the last word of its protocol to send, then closes it itself.
                with trio.move_on_after(SHARED_CLOSE_SECONDS):
                    await self._tunnel.closed.wait()
            # Threads of the app may still wait on it: the socket's closing ends them.
            self.abort()
        if self._direct is not None:
            self._direct.close()
        stream = self._stream
        unread = self._writer.failed or self._reader.conn.their_state in (
            h11.SEND_BODY,
            h11.ERROR,
        )
        linger = unread and not self._reader.at_eof
        with trio.CancelScope(shield=True):
            if linger and isinstance(stream, trio.SocketStream):
                await _lingering_close(stream)
            else:
                with trio.move_on_after(LINGER_SECONDS):
                    await stream.aclose()
                await trio.aclose_forcefully(stream)


def _raw_socket(stream: trio.abc.Stream) -> Any:
    """The socket under a (TLS-wrapped) socket stream: trio's, whose addresses and
    ``fileno()`` are the OS socket's; None on other streams."""
    if isinstance(stream, trio.SSLStream):
        stream = stream.transport_stream
    return getattr(stream, "socket", None)


def _is_eventlet_probe(exc: Exception) -> bool:
    """flask-sock, having used ``eventlet.input``, ends its response by importing
    eventlet.wsgi: expected, and not worth a traceback per WebSocket."""
    return isinstance(exc, ImportError) and (exc.name or "").startswith("eventlet")


def _posthooks(environ: dict[str, Any]) -> list[Any]:
    """The request's posthooks, looked up once the response is sent, not when the
    environ was built: an app may replace the list."""
    hooks = list(environ.get(POSTHOOK_KEYS[0]) or ())
    alias = environ.get(POSTHOOK_KEYS[1])
    if alias and alias is not environ.get(POSTHOOK_KEYS[0]):
        hooks += alias
    return hooks


async def _lingering_close(stream: trio.SocketStream) -> None:
    try:
        await stream.send_eof()
        with trio.move_on_after(LINGER_SECONDS):
            received = 0
            while received < LINGER_LIMIT:
                data = await stream.receive_some(RECEIVE_SIZE)
                if not data:
                    break
                received += len(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass
    except trio.BusyResourceError:
        pass  # an abandoned app thread is still reading the body: just close
    await trio.aclose_forcefully(stream)
