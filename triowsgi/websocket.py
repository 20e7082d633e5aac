"""WebSockets on triowsgi: eventlet.websocket's API, so that moving over is an import change.

Before, on eventlet::

    from eventlet import websocket

    @websocket.WebSocketWSGI
    def echo(ws):
        while (message := ws.wait()) is not None:
            ws.send(message)

After::

    from triowsgi import websocket   # the rest unchanged

    trio.run(triowsgi.serve, echo, 8090)

:class:`WebSocketWSGI` also takes an ``async def`` handler, which gets an
:class:`AsyncWebSocket` (``await ws.receive()``, ``await ws.send(...)``, ``async for
message in ws``) and runs in the connection's own Trio task, holding no thread::

    @websocket.WebSocketWSGI
    async def echo(ws):
        async for message in ws:
            await ws.send(message)

RFC 6455 and permessage-deflate (RFC 7692) are spoken with wsproto; the legacy hixie-76
drafts are not (their handshakes get ``400``). Pings are answered by the server; a
received message over ``max_frame_length`` bytes closes with 1009; a graceful shutdown of
the server closes every open WebSocket with 1001 at once.
"""

from ._websocket import (
    DEFAULT_MAX_FRAME_LENGTH,
    AsyncWebSocket,
    ConnectionClosed,
    WebSocket,
    WebSocketWSGI,
)

__all__ = [
    "DEFAULT_MAX_FRAME_LENGTH",
    "AsyncWebSocket",
    "ConnectionClosed",
    "WebSocket",
    "WebSocketWSGI",
]
