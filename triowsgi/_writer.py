"""The write side of one connection: a response's bytes as :mod:`._framing` frames them,
and every limit a client meets while the server writes to it.

:class:`ResponseWriter` is :mod:`._reader`'s counterpart. It frames each :class:`Batch`
of the app's response through the connection's :class:`ResponseFraming`, writes what a plain
socket takes at once from whichever thread holds the response (the app's, usually: see
:mod:`._direct`), and sends the rest from the connection task, waiting at most
``send_timeout`` (and ``socket_timeout``) for the client to take more: a client that
reads slowly is served, one that stopped reading is let go. ``wsgi.file_wrapper`` bodies
go by sendfile; the server's own error responses are complete messages of their own.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Awaitable, Callable
from typing import Final, final

import trio

from ._config import Config
from ._direct import DirectSocket, Pieces
from ._errors import REASONS, ClientDisconnected, SocketTimeout, error_body
from ._files import send_span, sendfile_now, start_body
from ._framing import ResponseFraming
from ._reader import RequestReader
from ._response import build_response
from ._workers import WorkerPool
from ._wsgi import Batch, Responder

__all__ = ["ResponseWriter"]

# Pieces of a response up to this size in all are joined into one send_all(): copying
# 256 KiB costs less than the two extra sends of a chunk's framing. Bigger pieces are
# sent as they are, so large buffers are never copied.
JOIN_LIMIT: Final = 256 * 1024
# On TLS, a send that makes no progress is found per slice of this size (one TLS record):
# a client reading 16 KiB per send_timeout still counts as reading.
SEND_SLICE: Final = 16 * 1024


def _seconds(value: float | None) -> float:
    return math.inf if value is None else value


@final
class ResponseWriter:
    """Frames and sends the responses of one connection.

    :attr:`framing` frames each response and says whether the connection may carry
    another request after it. :attr:`reader` is the connection's
    :class:`~._reader.RequestReader` (set before the first response). Per response:
    :meth:`start`, then batches through :meth:`produce` (in the app's thread) and
    :meth:`send_pieces`, or one :meth:`send_error`.
    """

    # Thousands of these sit idle on a busy server: no per-instance __dict__.
    __slots__ = (
        "_direct", "_http10_only", "_stream", "_version", "_workers", "body_bytes",
        "failed", "framing", "reader", "send_timeout", "sends_body",
    )  # fmt: skip

    def __init__(
        self,
        stream: trio.abc.Stream,
        direct: DirectSocket | None,
        config: Config,
        workers: WorkerPool,
    ) -> None:
        self._stream = stream
        self._direct = direct
        self._workers = workers
        self.reader: RequestReader  # set by the connection (it takes send_all from us)
        # A write waits at most this long for the client to take more bytes (a taken
        # connection's too).
        self.send_timeout = min(_seconds(config.socket_timeout), _seconds(config.send_timeout))
        # eventlet's max_http_version names the version in every status line.
        self._http10_only = config.max_http_version == "HTTP/1.0"
        self._version = b"HTTP/1.0" if self._http10_only else b"HTTP/1.1"
        self.framing = ResponseFraming()
        # Per-response state, reset by start().
        self.sends_body = True  # False for HEAD, 204 and 304 once the head is framed
        self.body_bytes = 0  # the body bytes sent (the access log's)
        self.failed = False  # the server answered with an error: close after it

    def start(self, method: bytes, *, http11: bool, keep_alive: bool) -> None:
        """A new response, to a request with ``method`` (see :meth:`ResponseFraming.start`)."""
        self.framing.start(method, http11=http11 and not self._http10_only, keep_alive=keep_alive)
        self.sends_body = True
        self.body_bytes = 0

    # -- in the app's thread -----------------------------------------------------------

    def produce(self, responder: Responder, first: bool) -> tuple[bool, Pieces]:
        """In the app's thread: the response's next batches (``first``: the app is
        called for the first), written for as long as the socket takes them at once.
        Whether the response is complete, and what is left for the connection task to
        send (all of one batch on a TLS stream).

        It stops after a batch when requests are waiting for a thread, as if each batch
        were its own trip: an endless stream must not keep them waiting for ever."""
        while True:
            batch = responder.call_app() if first else responder.next_batch()
            if responder.taken:
                return True, []
            pieces = self.frame(batch)
            if self._direct is None:
                return batch.done, pieces
            pieces = self._direct.write(pieces)
            if responder.file is not None and self.sends_body:
                return self._start_file(responder, pieces)
            if batch.done or pieces or not self.sends_body or self._workers.saturated:
                return batch.done, pieces
            first = False

    def send_from_thread(self, batch: Batch) -> None:
        """``write()``: in the app's thread, which writes what the socket takes itself."""
        pieces = self.frame(batch)
        if self._direct is not None:
            pieces = self._direct.write(pieces)
        if pieces:
            # What is left waits for the client to read: the thread's place goes back
            # meanwhile (a TLS stream can't tell, so it always does).
            self._workers.wait_on_client(self._send_pieces_released, pieces)

    def _send_pieces_released(
        self, pieces: Pieces, release: Callable[[], None]
    ) -> Awaitable[None]:
        release()
        return self.send_pieces(pieces)

    def frame(self, batch: Batch) -> Pieces:
        """The bytes of ``batch`` as :mod:`._framing` frames them (in whichever thread
        holds the response: the connection task waits while the app's thread does)."""
        framing = self.framing
        pieces: Pieces = []
        if batch.head is not None:
            pieces.append(framing.head(self._version, batch.head))
            self.sends_body = framing.sends_body
        if self.sends_body and batch.chunks:
            data = batch.chunks[0] if len(batch.chunks) == 1 else b"".join(batch.chunks)
            self.body_bytes += len(data)
            pieces += framing.data(data)
        if batch.done and (end := framing.end()):
            pieces.append(end)
        # From here the client may have part of the final response (100 Continue is not
        # one): an error can no longer be answered with a status.
        self.reader.response_started = True
        return pieces

    def _start_file(self, responder: Responder, unsent: Pieces) -> tuple[bool, Pieces]:
        """In the app's thread, once the head is framed: the ``wsgi.file_wrapper`` body
        of ``responder.file``, as :meth:`produce` returns. What the socket takes of it
        at once goes now, by one sendfile; :meth:`send_file` sends the rest."""
        assert responder.file is not None and self._direct is not None
        try:
            self.body_bytes += len(responder.file)
            start_body(self.framing, responder.file)
            if not unsent:  # the head went whole
                responder.file = sendfile_now(self._direct, responder.file)
            if responder.file is not None:
                return False, unsent
            responder.close()
            return True, [self.framing.end()]
        except BaseException:
            responder.close()  # as Responder closes its result on an error
            raise

    # -- in the connection's task ------------------------------------------------------

    async def send_pieces(self, pieces: Pieces) -> None:
        """Send what the app's thread left unsent."""
        if not pieces:
            # Usually so: the app's thread wrote the response itself. Not even a
            # checkpoint: a trip through the scheduler costs ~4% of a hello request.
            return
        if self._direct is not None:
            await self._send_direct(self._direct, pieces)
        elif sum(map(len, pieces)) <= JOIN_LIMIT:
            await self._send_stream(b"".join(pieces))
        else:
            for piece in pieces:
                await self._send_stream(piece)

    async def send_all(self, data: bytes | memoryview) -> None:
        """Send ``data``, within the limits on a client that does not read."""
        if not data:
            return
        if self._direct is not None:
            await self._send_direct(self._direct, [data])
        else:
            await self._send_stream(data)

    async def end_message(self) -> None:
        """Send the end of a response whose body went otherwise (HEAD, sendfile)."""
        await self.send_all(self.framing.end())

    async def send_file(self, responder: Responder) -> None:
        """The rest of ``responder.file``, by sendfile from the connection task (no
        thread is held while the client reads)."""
        assert responder.file is not None and self._direct is not None
        await send_span(self._direct, responder.file, self.wait_writable)

    async def send_error(self, status: int, exc: BaseException | None = None) -> None:
        """A complete response of the server's own; the connection closes after it.

        Framed on its own: the connection's framing may be midway through a response.
        """
        body = error_body(status, exc)
        head = build_response(
            f"{status} {REASONS.get(status, '')}".rstrip(),
            [("Content-Type", "text/plain; charset=utf-8")],
            capitalize_names=False,
            content_length=len(body),
            close=True,
        )
        framing = ResponseFraming()
        framing.start(b"", http11=True, keep_alive=False)
        data = b"".join([framing.head(self._version, head), *framing.data(body), framing.end()])
        self.sends_body = False
        self.body_bytes = len(body)  # for the access log
        with contextlib.suppress(ClientDisconnected, SocketTimeout):
            await self.send_all(data)
        self.failed = True

    async def _send_direct(self, direct: DirectSocket, pieces: Pieces) -> None:
        """Write ``pieces`` to a plain socket, waiting for it to take more for at most
        ``send_timeout`` (and ``socket_timeout``) at a time."""
        await trio.lowlevel.checkpoint_if_cancelled()
        pieces = direct.write(pieces)
        if not pieces:
            # As send_all() after an immediate write: the other connections get a turn.
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        while pieces:
            await self.wait_writable()
            pieces = direct.write(pieces)

    async def _send_stream(self, data: bytes | memoryview) -> None:
        """Send on a TLS stream, which can't say how much went: each slice of
        :data:`SEND_SLICE` bytes must go within ``send_timeout`` (and
        ``socket_timeout``)."""
        timeout = self.send_timeout
        try:
            if timeout == math.inf:
                await self._stream.send_all(data)
                return
            view = memoryview(data)
            for start in range(0, len(view), SEND_SLICE):
                with trio.move_on_after(timeout) as scope:
                    await self._stream.send_all(view[start : start + SEND_SLICE])
                if scope.cancelled_caught:
                    raise SocketTimeout(f"the client took no response bytes for {timeout} s")
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise ClientDisconnected(str(exc)) from exc

    async def wait_writable(self) -> None:
        """Wait until a plain socket takes more bytes (direct writes, sendfile): at most
        ``send_timeout`` (and ``socket_timeout``)."""
        assert isinstance(self._stream, trio.SocketStream)
        timeout = self.send_timeout
        try:
            with trio.move_on_after(timeout) as scope:
                await trio.lowlevel.wait_writable(self._stream.socket)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise ClientDisconnected(str(exc)) from exc
        if scope.cancelled_caught:
            raise SocketTimeout(f"the client took no response bytes for {timeout} s")
