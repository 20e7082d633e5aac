"""A WebSocket connection's protocol state, without I/O: what the blocking and the Trio
WebSockets of ``triowsgi.websocket`` share.

wsproto frames and parses; :class:`WebSocketProtocol` adds what an application-level
WebSocket needs on top of it: messages reassembled from fragments (and partial frames),
a size limit on them, pings answered, and the closing handshake (RFC 6455 §7). Bytes in,
bytes out: the caller feeds what the client sent to :meth:`receive_data` and sends what
it returns; it never blocks and never touches a socket, so both shells (a thread with a
blocking socket, a Trio task with a stream) drive the same code.

The phases:

- ``OPEN``: messages flow both ways.
- ``CLOSING``: we sent a close frame (the application closed, the server is shutting
  down, or the client broke a rule) and wait for the client's; messages that arrive
  meanwhile are still delivered, unless we closed because of one. The caller bounds
  this wait (a client may never answer).
- ``CLOSED``: the closing handshake is complete, the client's data ended, or the client
  sent bytes that are not WebSocket frames at all. Nothing more to read or send.
"""

from __future__ import annotations

import enum
from collections import deque
from typing import Any, Final, final

from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Message,
    Ping,
    TextMessage,
)
from wsproto.extensions import Extension, PerMessageDeflate
from wsproto.frame_protocol import CloseReason

__all__ = ["ConnectionClosed", "Phase", "WebSocketProtocol"]

# With permessage-deflate, wsproto inflates each piece of input it is fed at once, with
# no limit: 64 KiB of crafted input can inflate to 64 MiB. Feeding it this much at a time
# (and checking the size limit in between) bounds what one piece can grow to (~4 MiB).
DEFLATE_FEED_SIZE: Final = 4 * 1024

WSMessage = str | bytes


class ConnectionClosed(BrokenPipeError):
    """The WebSocket is closed (or closing): nothing more can be sent on it.

    A ``BrokenPipeError`` (an ``OSError``), as eventlet's sends on a closed WebSocket
    raise; ``WebSocketWSGI`` lets a handler end with it quietly.
    """


class Phase(enum.Enum):
    OPEN = "open"
    CLOSING = "closing"  # our close frame is sent; the client's is awaited
    CLOSED = "closed"


@final
class WebSocketProtocol:
    """One connection's WebSocket state; see the module's docstring.

    Not thread-safe: the blocking shell holds a lock around every call.
    """

    __slots__ = ("_conn", "_deflate", "_discard", "_max_size", "_messages", "_parts", "_size")

    def __init__(self, deflate: PerMessageDeflate | None, max_message_size: int) -> None:
        extensions: list[Extension] = [deflate] if deflate is not None else []
        self._conn = Connection(ConnectionType.SERVER, extensions=extensions)
        self._deflate = deflate is not None
        self._max_size = max_message_size
        # The message being received: its pieces so far (None between messages, so an
        # idle connection keeps no list) and their size; whether messages are dropped.
        self._parts: list[Any] | None = None
        self._size = 0
        self._discard = False
        # Messages received and not yet taken: made when one comes (an empty deque is
        # 760 bytes, which thousands of idle connections would each keep).
        self._messages: deque[WSMessage] | None = None

    @property
    def phase(self) -> Phase:
        state = self._conn.state
        if state is ConnectionState.OPEN:
            return Phase.OPEN
        if state is ConnectionState.LOCAL_CLOSING:
            return Phase.CLOSING
        return Phase.CLOSED  # REMOTE_CLOSING never lasts: receive_data answers at once

    def send(self, message: WSMessage | bytearray | memoryview) -> bytes:
        """The frame of one message (``str``: text, bytes-like: binary).

        Raises:
            ConnectionClosed: a close frame was sent or received already.
            TypeError: ``message`` is neither text nor bytes.
        """
        event: Message[Any]
        if isinstance(message, str):
            event = TextMessage(message)
        elif isinstance(message, (bytes, bytearray, memoryview)):
            event = BytesMessage(bytes(message))
        else:
            raise TypeError(f"a WebSocket message is str or bytes, not {type(message).__name__}")
        if self._conn.state is not ConnectionState.OPEN:
            raise ConnectionClosed("the WebSocket is closed")
        return self._conn.send(event)

    def close(self, code: int = CloseReason.NORMAL_CLOSURE, reason: str = "") -> bytes:
        """Begin the closing handshake: the close frame to send (``b""`` if one was sent
        or received already)."""
        if self._conn.state is not ConnectionState.OPEN:
            return b""
        return self._conn.send(CloseConnection(code, reason or None))

    def next_message(self) -> WSMessage | None:
        """The oldest message received and not yet taken, if any."""
        messages = self._messages
        if not messages:
            return None
        message = messages.popleft()
        if not messages:
            self._messages = None
        return message

    def drop_messages(self) -> None:
        """Deliver no more messages (the application closed, or the client broke a
        rule): what arrives until the client's close frame is dropped."""
        self._messages = None
        self._discard = True
        self._parts, self._size = None, 0

    def receive_data(self, data: bytes) -> bytes:
        """Take bytes the client sent (``b""``: its end); return the bytes to send back
        (pongs, the answer to its close, our close when it broke a rule). Complete
        messages are then taken with :meth:`next_message`."""
        if self._finished():
            return b""
        if not data:
            # The client's data ended without a closing handshake: 1006, nothing to say.
            self._conn.receive_data(None)
            return self._handle_events()
        step = DEFLATE_FEED_SIZE if self._deflate else len(data)
        out = b""
        for start in range(0, len(data), step):
            self._conn.receive_data(data[start : start + step])
            out += self._handle_events()
            if self._finished():
                break
        return out

    def _finished(self) -> bool:
        return self._conn.state is ConnectionState.CLOSED

    def _handle_events(self) -> bytes:
        out = b""
        for event in self._conn.events():
            if isinstance(event, Message):
                out += self._add_piece(event)
            elif isinstance(event, Ping):
                if self._conn.state is ConnectionState.OPEN:
                    out += self._conn.send(event.response())
            elif isinstance(event, CloseConnection):
                out += self._closed_by(event)
            # Pongs answer our pings, which we don't send: nothing to do.
            if self._finished():
                break
        return out

    def _add_piece(self, event: Message[Any]) -> bytes:
        if self._discard:
            return b""
        self._size += len(event.data)
        if self._size > self._max_size:
            # RFC 6455 §7.4.1: 1009, a message too big to process. The rest of it (and
            # anything after) is read and dropped while the client answers our close.
            return self._fail(CloseReason.MESSAGE_TOO_BIG, "message too big")
        if self._parts is None:
            self._parts = []
        self._parts.append(event.data)
        if event.message_finished:
            parts, self._parts, self._size = self._parts, None, 0
            text = isinstance(event, TextMessage)
            if self._messages is None:
                self._messages = deque()
            self._messages.append("".join(parts) if text else b"".join(parts))
        return b""

    def _closed_by(self, event: CloseConnection) -> bytes:
        state = self._conn.state
        if state is ConnectionState.REMOTE_CLOSING:
            return self._conn.send(event.response())  # RFC 6455 §5.5.1: echo the code
        if state is ConnectionState.OPEN:
            # Not a close frame: wsproto's report that the client broke the protocol
            # (1002, or 1007 for bad UTF-8). Its parser stops there, so the connection
            # ends once our close frame is out (RFC 6455 §7.1.7).
            data = self._fail(event.code, event.reason or "")
            self._conn.receive_data(None)
            return data
        if state is ConnectionState.LOCAL_CLOSING:
            self._conn.receive_data(None)  # a protocol error while closing: give up
        return b""

    def _fail(self, code: int, reason: str) -> bytes:
        self.drop_messages()
        return self.close(code, reason)
