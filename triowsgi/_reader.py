"""The read side of one connection, and every limit a client meets while the server
waits on it.

h11 frames requests and bodies; :class:`RequestReader` feeds it bytes and bounds each
wait (see docs/decisions.md, "Changed on purpose"):

- the TLS handshake and the first request head: ``header_timeout`` from the accept, so a
  client that connects and sends nothing is closed (it may also be evicted sooner, to
  admit a new client when every slot is taken: :mod:`._slots`);
- between keep-alive requests: the idle limit (``keepalive``), then ``header_timeout``
  from the next head's first byte (slowloris);
- request bodies: a minimum rate while the server waits on the client
  (``body_timeout`` seconds of waiting, plus one per ``body_min_rate`` bytes received:
  Apache mod_reqtimeout's model); time the app spends not reading does not count;
- every single wait: ``socket_timeout``.

A small Content-Length body is read before the app is called (a slow client then holds
no worker thread), but only for :data:`EAGER_BODY_WAIT`: a client that sends its body only
once the response has started must still get one.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any, Final, cast, final

import trio

from ._config import Config
from ._direct import DirectSocket
from ._errors import (
    ClientDisconnected,
    HeadersTooLarge,
    HTTPError,
    RequestBodyTimeout,
    RequestTimeout,
    RequestTooLarge,
    SocketTimeout,
    URITooLong,
    from_h11,
)
from ._h11 import h11
from ._input import Input
from ._logging import ServerLog
from ._request import as_http11, check_line_ends, check_request, check_request_line
from ._shutdown import Phase
from ._slots import Evictable, Slots
from ._workers import WorkerPool

__all__ = ["EAGER_BODY_LIMIT", "EAGER_BODY_WAIT", "RECEIVE_SIZE", "RequestReader"]

# One receive per request in the common case; big enough for a 64 KiB upload piece,
# small enough that 1,000 idle connections don't pin much memory.
RECEIVE_SIZE: Final = 64 * 1024
# Content-Length bodies up to this size are read before the app is called...
EAGER_BODY_LIMIT: Final = 256 * 1024
# ...if they arrive within this many seconds of the head. A client may wait for the
# response to start before it sends the body (eventlet calls the app at once, and it
# pulls): it gets the response this much later, never a deadlock.
EAGER_BODY_WAIT: Final = 0.5
# Unread request bodies up to this size are read and thrown away so the connection can
# be reused; past it, closing is cheaper than reading.
DRAIN_LIMIT: Final = 1024 * 1024
# With no socket_timeout, the longest we wait for an unread body to arrive before
# giving up on reusing the connection.
DRAIN_SECONDS: Final = 10.0


# Between requests, with nothing read past the last one, a connection needs no h11 state
# machine: one is made when the next head's first bytes come, so that thousands of idle
# connections keep none (~1 KB each), and a request that finds its connection waiting
# costs one. This one stands in meanwhile, shared by all; read_request takes it for "as
# good as new". Nothing feeds it: an app thread that outlived its response and still
# reads must not reach another client through it, so it takes no bytes (closed: more
# raise) and sends none (ERROR).
_WAITING: Final = h11.Connection(h11.SERVER)
_WAITING.receive_data(b"")
_WAITING.send_failed()
# The request states after which the connection may carry another request. (h11 leaves
# MIGHT_SWITCH_PROTOCOL out of its __all__, though it is one of its documented states.)
_REQUEST_DONE: Final = (h11.DONE, h11.MIGHT_SWITCH_PROTOCOL)  # type: ignore[attr-defined]


def _seconds(value: float | None) -> float:
    return math.inf if value is None else value


@final
class RequestReader:
    """Reads request heads and bodies from one stream through one h11 state machine.

    ``conn`` is that state machine: the connection's response side sends through it.
    ``owner`` is the connection, evicted through ``slots`` while it waits for a head;
    ``send`` writes bytes to the client (for ``100 Continue``). The app's reads of
    the body wait on the client through ``workers``, holding no place in it meanwhile.

    One concern, the read side and its limits, though a long class: heads, bodies and
    the socket reads under them share the state machine, the deadlines and the body's
    rate, and each piece is short; it was read again when the slow-bodies and WebSocket
    work added to it, and left whole (the write side is :mod:`._writer`'s).
    """

    # Thousands of these sit idle on a busy server: no per-instance __dict__.
    __slots__ = (
        "_accepted", "_body_error", "_body_received", "_body_waited", "_config",
        "_content_length", "_direct", "_idle_timeout", "_input", "_log", "_max_body",
        "_owner", "_send", "_served",
        "_slots", "_stream", "_timeout", "_workers", "at_eof", "broken", "client_closes",
        "conn", "phase", "response_started",
    )  # fmt: skip

    def __init__(
        self,
        stream: trio.abc.Stream,
        direct: DirectSocket | None,
        config: Config,
        *,
        owner: Evictable,
        slots: Slots,
        log: ServerLog,
        send: Callable[[bytes], Awaitable[None]],
        workers: WorkerPool,
    ) -> None:
        self._stream = stream
        self._direct = direct
        self._config = config
        self._owner = owner
        self._slots = slots
        self._log = log
        self._send = send
        self._workers = workers
        self.conn = _WAITING  # until the first head's bytes come
        self._timeout = _seconds(config.socket_timeout)
        self._max_body = _seconds(config.max_body_size)
        self._idle_timeout = config.keepalive_timeout
        self._accepted = trio.current_time()
        self._served = 0  # request heads read
        self.phase = Phase.READING
        self.at_eof = False
        # The body can no longer be framed (it timed out or failed): close after this
        # response, never drain it.
        self.broken = False
        # Per-request state, reset by open_body().
        self.response_started = False  # set by the response side
        self._input: Input | None = None
        self._content_length: int | None = None
        self.client_closes = False  # the request said Connection: close
        self._body_error: Exception | None = None  # met while reading the body eagerly
        self._body_received = 0
        # Seconds _receive() waited on the socket since open_body(): all the body's rate
        # limit counts (a read that finds bytes there waits, and costs, nothing).
        self._body_waited = 0.0

    # -- the head -------------------------------------------------------------------

    async def handshake(self) -> None:
        """The TLS handshake (if the stream is TLS), within the first head's deadline."""
        if not isinstance(self._stream, trio.SSLStream):
            return
        left = self._first_head_left()
        self._slots.waiting(self._owner, trio.current_time() + left, first=True)
        try:
            with trio.move_on_after(left) as scope:
                await self._stream.do_handshake()
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            if self._owner.expired:
                raise SocketTimeout("TLS handshake timed out") from None
            raise ClientDisconnected("TLS handshake failed") from exc
        finally:
            self._slots.active(self._owner)
        if scope.cancelled_caught:
            raise SocketTimeout("TLS handshake timed out")

    async def read_request(self) -> h11.Request | None:
        """The next request head, or None when the client closed, stayed idle too long
        or sent nothing within ``header_timeout`` of the accept.

        Raises:
            HTTPError: a head the server refuses (answer it with its status and close).
        """
        buffered, closed = (b"", False) if self.conn is _WAITING else self.conn.trailing_data
        first = not self._served
        # A new connection has its first request on its way (one that another server
        # process could have served): at shutdown it gets a moment to arrive, where an
        # idle keep-alive connection is closed at once.
        self.phase = Phase.READING if buffered or first else Phase.IDLE
        received = [buffered] if buffered else []  # the head's bytes, to check line ends
        # header_timeout bounds the whole head from its first byte (or, for the first
        # request, from the accept), however slowly it trickles in (slowloris);
        # socket_timeout bounds each wait within it.
        header_timeout = _seconds(self._config.header_timeout)
        limit = self._accepted + header_timeout if first else math.inf
        prefix = b""  # the first bytes of the head, to tell 414 from 431
        if buffered:
            limit = min(limit, trio.current_time() + header_timeout)
            prefix = self._head_prefix(buffered)
        deadline: float | None = limit
        # Nothing buffered: h11 can only say NEED_DATA, so don't ask it (a call saved on
        # every request).
        event = h11.NEED_DATA if not buffered and not closed else self._next_event(prefix)
        while True:
            if isinstance(event, h11.Request):
                check_line_ends(received[0] if len(received) == 1 else b"".join(received))
                self._content_length, self.client_closes = check_request(event, self._config)
                self._served += 1
                return as_http11(event)
            if event is not h11.NEED_DATA:
                return None  # ConnectionClosed
            if received:
                if deadline is None:
                    # The clock is read only now, when the head needs a second read
                    # (nearly never), not at its first byte: nothing was awaited since.
                    deadline = trio.current_time() + header_timeout
                data = await self._receive_head_part(deadline, header_timeout)
            else:
                # Awaited here, not in a helper: idle connections keep a frame less.
                try:
                    start = await self._receive(
                        self._head_wait(first), evictable=True, first=first
                    )
                except (SocketTimeout, ClientDisconnected) as exc:
                    if self._no_head_in_time(exc, first):
                        return None
                    raise
                data = start.lstrip(b"\r\n")  # RFC 9112 §2.2: skip empty lines
                if not data and not self.at_eof:
                    continue
                self.phase = Phase.READING
                if not first:
                    deadline = None  # from this first byte: see below
                prefix = self._head_prefix(data)
            received.append(data)
            if self.conn is _WAITING:  # the head's first bytes: its state machine
                self.conn = self._new_conn()
            self.conn.receive_data(data)
            event = self._next_event(prefix)

    def _head_prefix(self, data: bytes) -> bytes:
        prefix = data[: self._config.url_length_limit + 32]
        check_request_line(prefix)
        return prefix

    def _first_head_left(self) -> float:
        """Seconds left for the first head (and the TLS handshake before it)."""
        header_timeout = _seconds(self._config.header_timeout)
        left = self._accepted + header_timeout - trio.current_time()
        return max(min(self._timeout, left), 0)

    def _head_wait(self, first: bool) -> float:
        """How long to wait for a head to start."""
        # A keepalive number replaces socket_timeout for the idle wait (eventlet's
        # meaning); a new connection's first wait is idle too, and within the first head's
        # deadline.
        timeout = self._idle_timeout
        if first:
            timeout = min(timeout, self._first_head_left())
        return timeout

    def _no_head_in_time(self, exc: SocketTimeout | ClientDisconnected, first: bool) -> bool:
        """Whether the wait for a head ended at its deadline (then the connection just
        closes: there is no request to answer)."""
        # ClientDisconnected: closed by Slots.expire() when the deadline passed, or not.
        if isinstance(exc, ClientDisconnected) and not self._owner.expired:
            return False
        what = "no request" if first else "no further request"
        self._log.debug(f"{what} from {self._owner.peer} in time: closing")
        return True

    async def _receive_head_part(self, deadline: float, header_timeout: float) -> bytes:
        remaining = deadline - trio.current_time()
        try:
            return await self._receive(min(self._timeout, max(remaining, 0)))
        except SocketTimeout:
            if trio.current_time() >= deadline:
                raise RequestTimeout(f"no request head in {header_timeout} s") from None
            raise

    def _next_event(self, head_prefix: bytes = b"") -> Any:
        """h11's next event; its errors as ours. ``head_prefix``: the start of the
        request head being read, if it is one (an over-long first line there is a 414)."""
        try:
            return self.conn.next_event()
        except h11.RemoteProtocolError as exc:
            error = from_h11(exc)
            if isinstance(error, HeadersTooLarge) and head_prefix and b"\n" not in head_prefix:
                raise URITooLong("request line too long") from exc
            raise error from exc

    # -- the body -------------------------------------------------------------------

    async def open_body(self) -> Input:
        """``wsgi.input`` for the request just read: with the body bytes that came with
        the head, and the rest of a small Content-Length body if it comes within
        :data:`EAGER_BODY_WAIT`. The app's reads pull the rest."""
        self.response_started = False
        self._body_error = None
        self._body_waited = 0.0
        pieces: list[bytes | bytearray] = []  # joined once: a body is copied once
        try:
            complete = self._prefetch_body(pieces)
            self._body_received = sum(map(len, pieces))
            if not complete and self._eager_body(self._content_length):
                complete = await self._read_rest(pieces, trio.current_time() + EAGER_BODY_WAIT)
        except h11.RemoteProtocolError as exc:
            pieces, complete = [], False  # surfaces again on the app's first read
            self._log.debug(f"bad request body from {self._owner.peer}: {exc}")
        prefetched = b"".join(pieces)
        self._body_received = len(prefetched)
        if self._body_received > self._max_body:
            # A chunked body already too large on arrival: the app's first read gets the
            # 413, as when it arrives later.
            prefetched, complete = b"", False
        self._input = Input(self._pull_body, prefetched, complete=complete)
        return self._input

    def _prefetch_body(self, pieces: list[bytes | bytearray]) -> bool:
        """Add the body bytes received with the head to ``pieces``; whether that is all."""
        while True:
            event = self.conn.next_event() if self.conn.their_state is h11.SEND_BODY else None
            if isinstance(event, h11.Data):
                pieces.append(_body_bytes(event))
                continue
            return isinstance(event, h11.EndOfMessage) or event is None

    def _eager_body(self, length: int | None) -> bool:
        # Not when the client waits for 100 Continue: that is sent only when the app
        # asks for the body.
        return (
            length is not None
            and length <= EAGER_BODY_LIMIT
            and not self.conn.they_are_waiting_for_100_continue
        )

    async def _read_rest(self, pieces: list[bytes | bytearray], until: float) -> bool:
        """Add the rest of the body to ``pieces`` (h11 just said NEED_DATA) until it
        ends or ``until`` passes; whether all of it came."""
        try:
            need_data = True
            while True:
                data = await self._receive_body(need_data=need_data, until=until)
                if data is None:
                    return False  # not in time: the app reads the rest
                if not data:
                    return True
                pieces.append(data)
                need_data = False
        except (HTTPError, SocketTimeout, ClientDisconnected) as exc:
            # The app still runs, and its read past what arrived raises this, as if it
            # had been reading the socket itself.
            self._body_error = exc
            return False

    def _pull_body(self) -> bytes | bytearray:
        """In the app's thread: the next piece of the body (``wsgi.input``'s source).
        While it waits for the client, the thread holds no place in ``threads``."""
        if self._body_error is not None:
            raise self._body_error
        data = self._workers.wait_on_client(self._pull_for_app)
        assert data is not None  # no time limit but the client's
        return data

    def _pull_for_app(self, release: Callable[[], None]) -> Awaitable[bytes | bytearray | None]:
        return self._receive_body(on_wait=release)

    async def _receive_body(
        self,
        *,
        need_data: bool = False,
        until: float = math.inf,
        on_wait: Callable[[], None] | None = None,
    ) -> bytes | bytearray | None:
        """The next piece of the request body, ``b""`` at its end; None if ``until``
        passed first. h11's own piece, not a copy: it is joined or appended once by the
        reader. ``need_data``: h11 just said NEED_DATA, so read before asking it again.
        ``on_wait`` is called before any wait on the client (the 100 Continue included)."""
        try:
            if self._body_received > self._max_body:
                raise RequestTooLarge(f"request body > max_body_size ({self._max_body})")
            event = h11.NEED_DATA if need_data else self._next_event()
            while True:
                if isinstance(event, h11.Data):
                    piece = _body_bytes(event)
                    self._body_received += len(piece)
                    if self._body_received > self._max_body:  # chunked: no length upfront
                        raise RequestTooLarge(f"request body > max_body_size ({self._max_body})")
                    return piece
                if isinstance(event, h11.EndOfMessage):
                    return b""
                if event is not h11.NEED_DATA:
                    raise ClientDisconnected("the client closed before sending the whole body")
                await self._maybe_send_continue(on_wait)
                data = await self._receive_body_part(until, on_wait)
                if data is None:
                    return None
                self.conn.receive_data(data)
                event = self._next_event()
        except (HTTPError, SocketTimeout, ClientDisconnected):
            self.broken = True  # what is left of the body can't be framed or waited for
            raise

    async def _receive_body_part(
        self, until: float, on_wait: Callable[[], None] | None
    ) -> bytes | None:
        """Bytes of the body from the client within the body's rate limit and
        ``socket_timeout``; None if ``until`` passed first."""
        limit = self._body_wait_left()
        waited = self._body_waited
        try:
            return await self._receive(
                max(min(self._timeout, limit), 0), until=until, on_wait=on_wait
            )
        except SocketTimeout:
            if trio.current_time() >= until:
                return None
            if self._body_waited - waited >= limit:
                raise RequestBodyTimeout(
                    f"request body slower than body_timeout={self._config.body_timeout} s "
                    f"+ 1 s per body_min_rate={self._config.body_min_rate} bytes"
                ) from None
            raise

    def _body_wait_left(self) -> float:
        """Seconds the server may still wait on this body: mod_reqtimeout's
        ``body=T,MinRate=R`` is T seconds, plus one per R bytes received."""
        timeout, rate = self._config.body_timeout, self._config.body_min_rate
        if timeout is None:
            return math.inf
        allowed = timeout + (self._body_received / rate if rate else 0.0)
        return allowed - self._body_waited

    async def _maybe_send_continue(self, on_wait: Callable[[], None] | None) -> None:
        if self.conn.they_are_waiting_for_100_continue and not self.response_started:
            if on_wait is not None:  # the body's wait follows: release the thread now
                on_wait()
            headers = list(self._input.hundred_continue_headers if self._input else ())
            # h11 leaves the reason empty ("HTTP/1.1 100 \r\n"); send eventlet's line.
            interim = h11.InformationalResponse(
                status_code=100, reason=b"Continue", headers=headers
            )
            await self._send(self.conn.send(interim) or b"")

    # -- after the response ---------------------------------------------------------

    def release_body(self) -> None:
        """Let go of the request's body: thousands of idle connections keep nothing."""
        self._input = None

    def hand_over(self) -> bytes:
        """The app took the connection over: the bytes read past the request head (and
        the body the app did not read), which are the taker's now. HTTP is over: the
        state machine is let go."""
        unread = self._input.unread() if self._input is not None else b""
        data = unread + bytes(self.conn.trailing_data[0])
        self._input = None
        self.conn = _WAITING
        return data

    async def next_cycle(self) -> bool:
        """Once the response is sent: drain what the app left of the body and get h11
        ready for the next request; whether the connection can be reused."""
        self.release_body()
        if self.broken:
            return False
        if self.conn.their_state is h11.SEND_BODY and not await self._drain():
            return False
        # An Upgrade request leaves h11 expecting a 101 (MIGHT_SWITCH_PROTOCOL); the
        # response that went was a final one, so the request is as done.
        if self.conn.their_state not in _REQUEST_DONE:
            return False
        self._start_next_cycle()
        return True

    def _start_next_cycle(self) -> None:
        # The response went out framed by triowsgi (see _framing.py), so h11's server
        # side never left SEND_RESPONSE: a fresh state machine (both sides IDLE, as
        # after h11's own cycle, and as cheap) gets what was read past the request.
        trailing, closed = self.conn.trailing_data
        # RFC 9112 §2.2: skip empty lines before the next request line (a pipelined
        # request, a CRLF after a body), which h11 refuses.
        rest = trailing.lstrip(b"\r\n")
        if not rest and not closed:
            self.conn = _WAITING  # nearly always: see _WAITING
            return
        self.conn = self._new_conn()
        if rest:  # (b"" would tell h11 the client closed)
            self.conn.receive_data(rest)
        if closed:
            self.conn.receive_data(b"")

    def _new_conn(self) -> h11.Connection:
        return h11.Connection(h11.SERVER, max_incomplete_event_size=self._config.max_header_bytes)

    async def _drain(self) -> bool:
        drained = 0
        with trio.move_on_after(min(self._timeout, DRAIN_SECONDS)):
            try:
                while drained <= DRAIN_LIMIT:
                    event = self._next_event()
                    if isinstance(event, h11.EndOfMessage):
                        return True
                    if isinstance(event, h11.Data):
                        drained += len(_body_bytes(event))
                    elif event is h11.NEED_DATA:
                        self.conn.receive_data(await self._receive(math.inf))
                    else:
                        return False
            except (HTTPError, ClientDisconnected):
                return False
        return False

    # -- bytes from the socket ------------------------------------------------------

    async def _receive(
        self,
        timeout: float,
        *,
        until: float = math.inf,
        evictable: bool = False,
        first: bool = False,
        on_wait: Callable[[], None] | None = None,
    ) -> bytes:
        """The next bytes from the client (``b""`` at EOF), waiting at most ``timeout``
        for them, and not past ``until``. ``evictable``: the wait is for the ``first``
        head or a later one, with nothing buffered: meanwhile :class:`Slots` may evict the
        connection or end it at its deadline, and if it had to wait, ``conn`` is
        :data:`_WAITING` afterwards (:meth:`read_request` makes a state machine). The time
        spent waiting is added to the body's (``_body_waited``). ``on_wait`` is called
        when the read has to wait.

        On a plain socket: a direct read, and only when nothing has arrived a wait for
        the socket, two frames deep. An idle connection's memory is mostly its suspended
        coroutine frames: inside ``receive_some`` it would be six (about 2 KiB more)."""
        direct = self._direct
        if direct is None:
            data = await self._receive_stream(timeout, until, evictable, first, on_wait)
            self.at_eof = not data
            return data
        # As receive_some(): a cancelled task reads nothing more, even from a client that
        # keeps the socket readable (the grace period, _drain's time limit).
        await trio.lowlevel.checkpoint_if_cancelled()
        received = direct.read_nowait(RECEIVE_SIZE)
        if received is not None:
            # As receive_some() after an immediate read: the other connections get their
            # turn before this one goes on (measured: without it, upload and hello lose
            # 8-14%: the trips to the app's thread stop coming in batches).
            await trio.lowlevel.cancel_shielded_checkpoint()
            self.at_eof = not received
            return received
        # Nothing yet: wait here, not in a helper (idle connections keep a frame less).
        assert isinstance(self._stream, trio.SocketStream)
        started = trio.current_time()
        timeout = max(min(timeout, until - started), 0)
        if evictable:
            timeout = self._start_waiting(started, timeout, first)
        if on_wait is not None:
            on_wait()
        try:
            while received is None:
                if timeout == math.inf:  # no cancel scope: it costs more than the wait
                    await trio.lowlevel.wait_readable(self._stream.socket)
                else:
                    await self._wait_readable(timeout)
                received = direct.read_nowait(RECEIVE_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise ClientDisconnected(str(exc)) from exc
        finally:
            self._body_waited += trio.current_time() - started
            if evictable:
                self._end_waiting()
        self.at_eof = not received
        return received

    def _start_waiting(self, now: float, timeout: float, first: bool) -> float:
        """Tell the slots this connection waits for a head, and let go of its state
        machine meanwhile; the time limit left to the wait itself (none when the slots
        keep its deadline)."""
        reaped = self._slots.waiting(self._owner, now + timeout, first=first)
        self.conn = _WAITING
        return math.inf if reaped else timeout

    def _end_waiting(self) -> None:
        # (conn stays the stand-in: read_request makes one when it feeds the bytes.)
        self._slots.active(self._owner)

    async def _wait_readable(self, timeout: float) -> None:
        assert isinstance(self._stream, trio.SocketStream)
        try:
            with trio.move_on_after(timeout) as scope:
                await trio.lowlevel.wait_readable(self._stream.socket)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise ClientDisconnected(str(exc)) from exc
        if scope.cancelled_caught:
            raise SocketTimeout("timed out waiting for the client")

    async def _receive_stream(
        self,
        timeout: float,
        until: float,
        evictable: bool,
        first: bool,
        on_wait: Callable[[], None] | None,
    ) -> bytes:
        started = trio.current_time()
        timeout = max(min(timeout, until - started), 0)
        if evictable:
            timeout = self._start_waiting(started, timeout, first)
        if on_wait is not None:  # TLS can't tell whether bytes are there: assume a wait
            on_wait()
        try:
            if timeout == math.inf:
                data = await self._stream.receive_some(RECEIVE_SIZE)
            else:
                with trio.move_on_after(timeout) as scope:
                    data = await self._stream.receive_some(RECEIVE_SIZE)
                if scope.cancelled_caught:
                    raise SocketTimeout("timed out waiting for the client")
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise ClientDisconnected(str(exc)) from exc
        finally:
            self._body_waited += trio.current_time() - started
            if evictable:
                self._end_waiting()
        return data if isinstance(data, bytes) else bytes(data)


def _body_bytes(event: h11.Data) -> bytes | bytearray:
    """``event.data``, which h11 types as bytes but gives as a slice of its buffer (a
    bytearray): said as it is, since compiled code checks what it is told."""
    data: bytes | bytearray = cast(Any, event).data
    return data
