"""One client connection: the h11 read/respond loop, with keep-alive, pipelining,
timeouts and the server's own error responses.

The loop is driven by h11's state machine: h11 frames requests and bodies and decides
whether the connection may be reused; this module adds only what h11 leaves to servers
(limits, the decisions in DECISIONS.md) and moves bytes. The app runs in a worker
thread (see :mod:`._wsgi`); everything here runs in the connection's Trio task.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import socket
import time
from collections.abc import Callable
from typing import Any, Final, TypeVar, final

import trio

from ._config import Config
from ._direct import Pieces, direct_socket
from ._errors import (
    REASONS,
    ClientDisconnected,
    HeadersTooLarge,
    HTTPError,
    RequestTimeout,
    RequestTooLarge,
    SocketTimeout,
    URITooLong,
    error_body,
    from_h11,
)
from ._h11 import h11
from ._input import Input
from ._logging import ServerLog, access_fields
from ._proxy import TrustedProxies
from ._request import as_http11, check_line_ends, check_request, check_request_line
from ._response import build_response, has_body
from ._shutdown import Phase, Shutdown
from ._workers import WorkerPool
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

# One receive_some() per request in the common case; big enough for a 64 KiB upload
# piece, small enough that 1,000 idle connections don't pin much memory.
RECEIVE_SIZE: Final = 64 * 1024
# Unread request bodies up to this size are read and thrown away so the connection can
# be reused; past it, closing is cheaper than reading.
DRAIN_LIMIT: Final = 1024 * 1024
# With no socket_timeout, the longest we wait for an unread body to arrive before
# giving up on reusing the connection.
DRAIN_SECONDS: Final = 10.0
# After an error response, keep reading (and discarding) for a while before closing, so
# the client's unsent request bytes don't make the kernel reset the connection and
# destroy the response before the client reads it (RFC 9112 §9.6).
LINGER_SECONDS: Final = 2.0
LINGER_LIMIT: Final = 1024 * 1024
# Content-Length bodies up to this size are read before the app is called.
EAGER_BODY_LIMIT: Final = 256 * 1024
# Pieces of a response up to this size in all are joined into one send_all(): copying
# 256 KiB costs less than the two extra sends of a chunk's framing. Bigger pieces are
# sent as they are, so large buffers are never copied.
JOIN_LIMIT: Final = 256 * 1024
# The longest a result's close() may take after a response was cut short.
CLOSE_SECONDS: Final = 5.0
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
    return ConnectionInfo(scheme, str(server[0]), str(server[1]), str(remote[0]), str(remote[1]))


def _seconds(value: float | None) -> float:
    return math.inf if value is None else value


@final
class HTTPConnection:
    """Serves requests on one stream until the client or h11 says the connection ends."""

    # Thousands of these sit idle on a busy server: no per-instance __dict__.
    __slots__ = (
        "_app", "_at_eof", "_body_bytes", "_body_error", "_body_received", "_config",
        "_conn", "_content_length", "_direct", "_failed", "_header_timeout",
        "_http10_only", "_idle_timeout", "_info", "_input", "_log", "_max_body",
        "_method", "_proxies", "_response_started", "_sends_body", "_served",
        "_shutdown", "_stats", "_stream", "_timeout", "_workers", "phase",
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
    ) -> None:
        self._stream = stream
        self._direct = direct_socket(stream)
        self._app = app
        self._config = config
        self._log = log
        self._workers = workers
        self._stats = stats
        self._shutdown = shutdown
        self._info = connection_info(stream)
        self._proxies = proxies
        self._conn = h11.Connection(h11.SERVER, max_incomplete_event_size=config.max_header_bytes)
        self._timeout = _seconds(config.socket_timeout)
        self._header_timeout = _seconds(config.header_timeout)
        self._max_body = _seconds(config.max_body_size)
        self._idle_timeout = (
            self._timeout if isinstance(config.keepalive, bool) else config.keepalive_timeout
        )
        self._http10_only = config.max_http_version == "HTTP/1.0"
        # Per-request state, reset by _respond().
        self._method = b""
        self._sends_body = True
        self._response_started = False
        self._body_bytes = 0
        self._body_received = 0
        self._input: Input | None = None
        self._failed = False  # the server answered with an error: close after it
        self._at_eof = False
        self._content_length: int | None = None  # of the current request, if it has one
        self._body_error: Exception | None = None  # met while reading the body eagerly
        self._served = 0  # requests read on this connection
        self.phase = Phase.READING

    async def run(self) -> None:
        """Serve until the connection ends; never raises for anything the client does."""
        try:
            await self._handshake()
            while await self._serve_one():
                pass
        except ClientDisconnected:
            self._log.debug(f"connection from {self._peer} closed by the client")
        except SocketTimeout:
            self._log.debug(f"connection from {self._peer} timed out")
        finally:
            await self._close()

    def abort(self) -> None:
        """Close the connection now (at shutdown): a wait on it ends with the stream
        closed. Synchronous, so that shutdown can close every idle connection at once."""
        if self._direct is not None:
            self._direct.close()
        stream = self._stream
        if isinstance(stream, trio.SSLStream):
            stream = stream.transport_stream
        sock = getattr(stream, "socket", None)
        if sock is not None:
            sock.close()

    @property
    def _peer(self) -> str:
        return f"{self._info.remote_addr}:{self._info.remote_port}"

    async def _handshake(self) -> None:
        if isinstance(self._stream, trio.SSLStream):
            # The handshake comes before the head and is bounded like it: otherwise a
            # client trickling a ClientHello would hold the connection for ever (slowloris
            # over TLS), since socket_timeout is off by default.
            with trio.move_on_after(min(self._timeout, self._header_timeout)) as scope:
                try:
                    await self._stream.do_handshake()
                except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                    raise ClientDisconnected("TLS handshake failed") from exc
            if scope.cancelled_caught:
                raise SocketTimeout("TLS handshake timed out")

    async def _serve_one(self) -> bool:
        """Read and answer one request; True if the connection may carry another."""
        try:
            request = await self._read_request()
        except HTTPError as exc:
            self._log.debug(f"bad request from {self._peer}: {exc.status} {exc}")
            await self._send_error(exc.status)
            return False
        if request is None:
            return False
        self._served += 1
        self.phase = Phase.BUSY
        await self._respond(request)
        self._input = None  # with its body: thousands of idle connections keep nothing
        return await self._next_cycle() and not self._shutdown.closing

    # -- reading --------------------------------------------------------------------

    async def _read_request(self) -> h11.Request | None:
        """The next request head, or None when the client closed or stayed idle too long."""
        buffered, closed = self._conn.trailing_data
        idle = not buffered
        # A new connection has its first request on its way (one that another server
        # process could have served): at shutdown it gets a moment to arrive, where
        # an idle keep-alive connection is closed at once.
        self.phase = Phase.READING if buffered or not self._served else Phase.IDLE
        received = [buffered] if buffered else []  # the head's bytes, to check line ends
        # header_timeout bounds the whole head from its first byte, however slowly
        # it trickles in (slowloris); socket_timeout bounds each wait within it.
        deadline = math.inf if idle else trio.current_time() + self._header_timeout
        prefix = b""  # the first bytes of the head, to tell 414 from 431
        # Nothing buffered: h11 can only say NEED_DATA, so don't ask it (a call saved on
        # every request).
        event = h11.NEED_DATA if idle and not closed else self._next_event(prefix)
        while True:
            if isinstance(event, h11.Request):
                check_line_ends(received[0] if len(received) == 1 else b"".join(received))
                self._content_length = check_request(event, self._config)
                return as_http11(event)
            if event is not h11.NEED_DATA:
                return None  # ConnectionClosed
            if idle:
                try:
                    data = await self._receive(self._idle_timeout)
                except SocketTimeout:
                    return None  # an idle keep-alive connection timed out: just close
                data = data.lstrip(b"\r\n")  # RFC 9112 §2.2: skip empty lines
                if not data and not self._at_eof:
                    continue
                idle = False
                self.phase = Phase.READING
                deadline = trio.current_time() + self._header_timeout
                prefix = data[: self._config.url_length_limit + 32]
                check_request_line(prefix)
            else:
                data = await self._receive_head_part(deadline)
            received.append(data)
            self._conn.receive_data(data)
            event = self._next_event(prefix)

    async def _receive_head_part(self, deadline: float) -> bytes:
        remaining = deadline - trio.current_time()
        try:
            return await self._receive(min(self._timeout, max(remaining, 0)))
        except SocketTimeout:
            if trio.current_time() >= deadline:
                raise RequestTimeout(f"no request head in {self._header_timeout} s") from None
            raise

    def _next_event(self, head_prefix: bytes = b"") -> Any:
        """h11's next event; its errors as ours. ``head_prefix``: the start of the
        request head being read, if it is one (an over-long first line there is a 414)."""
        try:
            return self._conn.next_event()
        except h11.RemoteProtocolError as exc:
            error = from_h11(exc)
            if isinstance(error, HeadersTooLarge) and head_prefix and b"\n" not in head_prefix:
                raise URITooLong("request line too long") from exc
            raise error from exc

    async def _receive(self, timeout: float | None = None) -> bytes:
        """The next bytes from the client (``b""`` at EOF), waiting at most ``timeout``
        (default: socket_timeout) for them.

        On a plain socket: a direct read, and only when nothing has arrived a wait for
        the socket, two frames deep. An idle connection's memory is mostly its suspended
        coroutine frames: inside ``receive_some`` it would be six (about 2 KiB more)."""
        timeout = self._timeout if timeout is None else timeout
        direct = self._direct
        if direct is None:
            data = await self._receive_stream(timeout)
        else:
            # As receive_some(): a cancelled task reads nothing more, even from a client
            # that keeps the socket readable (the grace period, _drain's time limit).
            await trio.lowlevel.checkpoint_if_cancelled()
            received = direct.read_nowait(RECEIVE_SIZE)
            if received is not None:
                # As receive_some() after an immediate read: the other connections get
                # their turn before this one goes on (measured: without it, upload and
                # hello lose 8-14%: the trips to the app's thread stop coming in batches).
                await trio.lowlevel.cancel_shielded_checkpoint()
            while received is None:
                await self._wait_readable(timeout)
                received = direct.read_nowait(RECEIVE_SIZE)
            data = received
        self._at_eof = not data
        return data

    async def _wait_readable(self, timeout: float) -> None:
        assert isinstance(self._stream, trio.SocketStream)
        try:
            if timeout == math.inf:  # no cancel scope: it costs more than the wait
                await trio.lowlevel.wait_readable(self._stream.socket)
                return
            with trio.move_on_after(timeout) as scope:
                await trio.lowlevel.wait_readable(self._stream.socket)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise ClientDisconnected(str(exc)) from exc
        if scope.cancelled_caught:
            raise SocketTimeout("timed out waiting for the client")

    async def _receive_stream(self, timeout: float) -> bytes:
        try:
            if timeout == math.inf:
                data = await self._stream.receive_some(RECEIVE_SIZE)
            else:
                with trio.move_on_after(timeout):
                    data = await self._stream.receive_some(RECEIVE_SIZE)
                    timeout = 0
                if timeout:
                    raise SocketTimeout("timed out waiting for the client")
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise ClientDisconnected(str(exc)) from exc
        return data if isinstance(data, bytes) else bytes(data)

    async def _receive_body(self, *, need_data: bool = False) -> bytes | bytearray:
        """The next piece of the request body, ``b""`` at its end (for ``wsgi.input``).

        h11's own piece, not a copy: it is joined or appended once by the reader.
        ``need_data``: h11 just said NEED_DATA, so read before asking it again."""
        if self._body_received > self._max_body:
            raise RequestTooLarge(f"request body > max_body_size ({self._max_body})")
        event = h11.NEED_DATA if need_data else self._next_event()
        while True:
            if isinstance(event, h11.Data):
                self._body_received += len(event.data)
                if self._body_received > self._max_body:  # a chunked body: no length upfront
                    raise RequestTooLarge(f"request body > max_body_size ({self._max_body})")
                return event.data
            if isinstance(event, h11.EndOfMessage):
                return b""
            if event is not h11.NEED_DATA:
                raise ClientDisconnected("the client closed before sending the whole body")
            await self._maybe_send_continue()
            self._conn.receive_data(await self._receive())
            event = self._next_event()

    async def _maybe_send_continue(self) -> None:
        if self._conn.they_are_waiting_for_100_continue and not self._response_started:
            headers = self._input.hundred_continue_headers if self._input else []
            # h11 leaves the reason empty ("HTTP/1.1 100 \r\n"); send eventlet's line.
            interim = h11.InformationalResponse(
                status_code=100, reason=b"Continue", headers=headers
            )
            await self._send_all(self._conn.send(interim))

    def _prefetch_body(self, pieces: list[bytes | bytearray]) -> bool:
        """Add the body bytes received with the head to ``pieces``; whether that is all."""
        while True:
            event = self._conn.next_event() if self._conn.their_state is h11.SEND_BODY else None
            if isinstance(event, h11.Data):
                pieces.append(event.data)
                continue
            return isinstance(event, h11.EndOfMessage) or event is None

    def _eager_body(self) -> bool:
        # A small Content-Length body is read before the app runs: its reads then cost
        # no trip back to Trio. Not when the client waits for 100 Continue: that is
        # sent only when the app asks for the body.
        length = self._content_length
        return (
            length is not None
            and length <= EAGER_BODY_LIMIT
            and not self._conn.they_are_waiting_for_100_continue
        )

    async def _read_rest(self, pieces: list[bytes | bytearray]) -> bool:
        """Add the rest of the body to ``pieces`` (h11 just said NEED_DATA); whether all
        of it came."""
        try:
            need_data = True
            while data := await self._receive_body(need_data=need_data):
                pieces.append(data)
                need_data = False
        except (HTTPError, SocketTimeout, ClientDisconnected) as exc:
            # The app still runs, and its read past what arrived raises this, as if it
            # had been reading the socket itself.
            self._body_error = exc
            return False
        return True

    # -- responding -----------------------------------------------------------------

    async def _respond(self, request: h11.Request) -> None:
        self._method = request.method
        self._sends_body = True
        self._response_started = False
        self._body_bytes = 0
        self._body_error = None
        pieces: list[bytes | bytearray] = []  # joined once: a body is copied once
        try:
            complete = self._prefetch_body(pieces)
            if not complete and self._eager_body():
                complete = await self._read_rest(pieces)
        except h11.RemoteProtocolError as exc:
            pieces, complete = [], False  # surfaces again on the app's first read
            self._log.debug(f"bad request body from {self._peer}: {exc}")
        prefetched = b"".join(pieces)
        if self._http10_only:
            # max_http_version="HTTP/1.0": answer as to an HTTP/1.0 client, so h11 frames
            # bodies without chunking and ends the connection after the response.
            self._conn.their_http_version = b"1.0"
        self._body_received = len(prefetched)
        if self._body_received > self._max_body:
            # A chunked body already too large on arrival: the app's first read gets the
            # 413, as when it arrives later.
            prefetched, complete = b"", False
        self._input = Input(self._pull_body, prefetched, complete=complete)
        environ = build_environ(request, self._info, self._config.environ, self._input)
        # The app's thread is not one of Trio's: this is what it passes as trio_token=
        # to call back into the server's Trio loop (trio.from_thread.run and friends).
        environ["triowsgi.trio_token"] = self._workers.token
        if self._proxies:
            self._proxies.apply(environ)
        responder = Responder(
            self._app,
            environ,
            method=request.method,
            minimum_chunk_size=self._config.minimum_chunk_size,
            capitalize_names=self._config.capitalize_response_headers,
            close_connection=self._must_close,
            send_from_thread=self._send_from_thread,
        )
        # Counted before the app runs: a client that has its response sees itself counted.
        self._stats.requests_served += 1
        started = time.perf_counter()
        status = 0
        try:
            status = await self._run_app(responder)
        finally:
            # Also when the client went away or the server is stopping: posthooks are
            # shielded, and the request did reach the app, so it is logged.
            finished = time.perf_counter()
            await self._run_posthooks(environ)
            self._log_access(request, environ, status or responder.status_code, started, finished)

    def _pull_body(self) -> bytes | bytearray:
        if self._body_error is not None:
            raise self._body_error
        return trio.from_thread.run(self._receive_body, trio_token=self._workers.token)

    def _send_from_thread(self, batch: Batch) -> None:
        # write(): in the app's thread, which writes what the socket takes itself.
        pieces = self._frame(batch)
        if self._direct is not None:
            pieces = self._direct.write(pieces)
        if pieces:
            trio.from_thread.run(self._send_pieces, pieces, trio_token=self._workers.token)

    def _status_line_version(self, head: bytes) -> bytes:
        # h11 always writes an HTTP/1.1 status line; eventlet's max_http_version names
        # the version in it.
        return b"HTTP/1.0" + head[8:] if self._http10_only else head

    def _must_close(self) -> bool:
        # A client still waiting for 100 Continue may or may not send its body: the
        # connection's framing is unknowable, so it ends with this response.
        return (
            not self._config.keepalive
            or self._shutdown.closing
            or self._http10_only
            or self._conn.they_are_waiting_for_100_continue
        )

    async def _run_app(self, responder: Responder) -> int:
        """Run the app and send its response; the status code sent (for the access log)."""
        try:
            done, unsent = await self._in_thread(self._produce, responder, responder.call_app)
            while True:
                await self._send_pieces(unsent)
                if done:
                    return responder.status_code
                if not self._sends_body:  # HEAD: the head is all the client gets
                    await self._in_thread(responder.close)
                    await self._send_all(self._conn.send(h11.EndOfMessage()))
                    return responder.status_code
                done, unsent = await self._in_thread(
                    self._produce, responder, responder.next_batch
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

    async def _in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        # Abandoned on cancellation: only the shutdown grace period cancels app work, and
        # an app stuck forever must not hold the server's exit.
        return await self._workers.run(in_app_thread, fn, *args)

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
        if isinstance(exc, HTTPError):
            # A malformed or oversized body, met by the app's read and let through: the
            # client's fault, logged as a bad request is, so that no client can fill the
            # error log with tracebacks at will.
            self._log.debug(f"bad request body from {self._peer}: {exc.status} {exc}")
        else:
            self._log.exception(f"error in the application for {self._peer}", exc)
        if self._response_started:
            # The client can't be told with a status any more; an incomplete body and a
            # closed connection are how HTTP signals it.
            raise ClientDisconnected("response aborted after an application error")
        status = exc.status if isinstance(exc, HTTPError) else 500
        await self._send_error(status, exc if self._config.debug else None)
        return status

    def _produce(self, responder: Responder, step: Callable[[], Batch]) -> tuple[bool, Pieces]:
        """In the app's thread: the response's next batches, written for as long as the
        socket takes them at once. Whether the response is complete, and what is left
        for the connection task to send (all of one batch on a TLS stream).

        It stops after a batch when requests are waiting for a thread, as if each batch
        were its own trip: an endless stream must not keep them waiting for ever."""
        while True:
            batch = step()
            pieces = self._frame(batch)
            if self._direct is None:
                return batch.done, pieces
            pieces = self._direct.write(pieces)
            if batch.done or pieces or not self._sends_body or self._workers.saturated:
                return batch.done, pieces
            step = responder.next_batch

    def _frame(self, batch: Batch) -> Pieces:
        """The bytes of ``batch`` as h11 frames them (in whichever thread holds the
        response: the connection task waits while the app's thread does)."""
        pieces: Pieces = []
        if batch.head is not None:
            self._sends_body = has_body(batch.head.status_code, self._method)
            pieces.append(self._status_line_version(self._conn.send(batch.head) or b""))
        if self._sends_body and batch.chunks:
            data = batch.chunks[0] if len(batch.chunks) == 1 else b"".join(batch.chunks)
            self._body_bytes += len(data)
            pieces += self._conn.send_with_data_passthrough(h11.Data(data=data)) or ()
        if batch.done:
            pieces.append(self._conn.send(h11.EndOfMessage()))
        # From here the client may have part of the final response (100 Continue is not
        # one): an error can no longer be answered with a status.
        self._response_started = True
        return pieces

    async def _send_pieces(self, pieces: Pieces) -> None:
        if sum(map(len, pieces)) <= JOIN_LIMIT:
            await self._send_all(b"".join(pieces))
        else:
            for piece in pieces:
                await self._send_all(piece)

    async def _send_all(self, data: bytes | memoryview) -> None:
        if not data:
            return
        try:
            if self._timeout == math.inf:
                await self._stream.send_all(data)
                return
            with trio.move_on_after(self._timeout):
                await self._stream.send_all(data)
                return
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise ClientDisconnected(str(exc)) from exc
        raise SocketTimeout("timed out sending to the client")

    async def _send_error(self, status: int, exc: BaseException | None = None) -> None:
        """A complete response of the server's own, then the connection closes.

        Serialised by a fresh h11 connection: ours may be in an error state.
        """
        body = error_body(status, exc)
        head = build_response(
            f"{status} {REASONS.get(status, '')}".rstrip(),
            [("Content-Type", "text/plain; charset=utf-8")],
            capitalize_names=False,
            content_length=len(body),
            close=True,
        )
        writer = h11.Connection(h11.SERVER)
        data = (
            self._status_line_version(writer.send(head))
            + writer.send(h11.Data(data=body))
            + writer.send(h11.EndOfMessage())
        )
        self._sends_body = False
        with contextlib.suppress(ClientDisconnected, SocketTimeout):
            await self._send_all(data)
        self._failed = True

    # -- after the response ---------------------------------------------------------

    async def _next_cycle(self) -> bool:
        """Drain what the app left of the body; True if the connection can be reused."""
        if self._failed or self._conn.our_state is not h11.DONE:
            return False
        if self._conn.their_state is h11.SEND_BODY and not await self._drain():
            return False
        if self._conn.their_state is not h11.DONE:
            return False
        self._start_next_cycle()
        return True

    def _start_next_cycle(self) -> None:
        trailing, closed = self._conn.trailing_data
        if not trailing.startswith((b"\r", b"\n")):
            self._conn.start_next_cycle()
            return
        # RFC 9112 §2.2: skip empty lines before the next request line (a pipelined
        # request, a CRLF after a body), which h11 refuses. Its buffer can't be edited,
        # so a fresh state machine (both sides IDLE, as after a cycle) gets the rest.
        self._conn = h11.Connection(
            h11.SERVER, max_incomplete_event_size=self._config.max_header_bytes
        )
        self._conn.receive_data(trailing.lstrip(b"\r\n"))
        if closed:
            self._conn.receive_data(b"")

    async def _drain(self) -> bool:
        drained = 0
        with trio.move_on_after(min(self._timeout, DRAIN_SECONDS)):
            try:
                while drained <= DRAIN_LIMIT:
                    event = self._next_event()
                    if isinstance(event, h11.EndOfMessage):
                        return True
                    if isinstance(event, h11.Data):
                        drained += len(event.data)
                    elif event is h11.NEED_DATA:
                        self._conn.receive_data(await self._receive(math.inf))
                    else:
                        return False
            except (HTTPError, ClientDisconnected):
                return False
        return False

    async def _run_posthooks(self, environ: dict[str, Any]) -> None:
        # Looked up now, not when the environ was built: an app may replace the list.
        hooks = list(environ.get(POSTHOOK_KEYS[0]) or ())
        alias = environ.get(POSTHOOK_KEYS[1])
        if alias and alias is not environ.get(POSTHOOK_KEYS[0]):
            hooks += alias
        if not hooks:
            return
        # No shield of their own: the request's in-flight scope already protects them
        # from the server's cancellation, and the grace period still bounds them.
        await self._in_thread(call_posthooks, hooks, environ, self._log)

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
                body_length=self._body_bytes,
                started=started,
                finished=finished,
            )
        )

    async def _close(self) -> None:
        """Close the stream; after an abrupt end, linger so the client reads our answer."""
        if self._direct is not None:
            self._direct.close()
        stream = self._stream
        unread = self._failed or self._conn.their_state in (h11.SEND_BODY, h11.ERROR)
        linger = unread and not self._at_eof
        with trio.CancelScope(shield=True):
            if linger and isinstance(stream, trio.SocketStream):
                await _lingering_close(stream)
            else:
                with trio.move_on_after(LINGER_SECONDS):
                    await stream.aclose()
                await trio.aclose_forcefully(stream)


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
