"""``triowsgi.websocket``: eventlet.websocket's API on wsproto, driven by real clients.

Every behaviour is checked for both handler kinds (``kind``): a blocking handler, which
gets a ``WebSocket`` in the app's thread over ``get_socket()``, and an ``async def`` one,
which gets an ``AsyncWebSocket`` in the connection's Trio task over ``take_stream``.
The clients are the ``websockets`` library's sync client and ``websocket-client``, each
run in a thread; then the libraries people bring from eventlet: flask-sock (on
simple-websocket) and python-socketio in ``async_mode="threading"``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import ssl
import sys
import threading
import tracemalloc
from collections.abc import Callable
from typing import Any, TypeVar

import flask
import flask_sock
import pytest
import requests
import socketio
import trio
import trio.testing
import websocket as websocket_client
import websockets.exceptions
import websockets.sync.client
from conftest import RawClient, RecordingLog, StartServer, hello_app
from test_shutdown import start
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, TextMessage
from wsproto.extensions import PerMessageDeflate
from wsproto.utilities import generate_accept_token

import triowsgi
import triowsgi._websocket
from triowsgi import websocket
from triowsgi._websocket_handshake import HandshakeRefused, choose_deflate, negotiate
from triowsgi._websocket_protocol import WebSocketProtocol

T = TypeVar("T")
MiB = 1024 * 1024
KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 §1.3's example key
HANDSHAKE = (
    "GET /chat HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    f"Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n"
).encode()


async def in_thread(fn: Callable[[], T], timeout: float = 20) -> T:
    """Run a blocking client in a thread, bounded (a hung client fails the test)."""
    with trio.fail_after(timeout):
        return await trio.to_thread.run_sync(fn, abandon_on_cancel=True)


def connect(port: int, path: str = "/", **options: Any) -> Any:
    """The ``websockets`` library's sync client (no proxy from the environment)."""
    options = {"proxy": None, "max_size": None, "open_timeout": 5, "close_timeout": 5, **options}
    scheme = "wss" if "ssl" in options else "ws"
    host = "localhost" if "ssl" in options else "127.0.0.1"
    return websockets.sync.client.connect(f"{scheme}://{host}:{port}{path}", **options)


# -- handlers, one of each kind for every behaviour ---------------------------------------


def echo(ws: websocket.WebSocket) -> None:
    """eventlet's canonical handler: echo until the client closes."""
    while (message := ws.wait()) is not None:
        if message == "close please":
            ws.close((4001, "as you wish"))
            return
        ws.send(message)


async def async_echo(ws: websocket.AsyncWebSocket) -> None:
    async for message in ws:
        if message == "close please":
            await ws.close(4001, "as you wish")
            return
        await ws.send(message)


HANDLERS: dict[str, Any] = {"sync": echo, "async": async_echo}


@pytest.fixture(params=["sync", "async"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def serve_echo(start_server: StartServer, kind: str, **options: Any) -> int:
    server = await start_server(websocket.WebSocketWSGI(HANDLERS[kind]), **options)
    return server.port


# -- TLS -------------------------------------------------------------------------------


# -- the websockets client ---------------------------------------------------------------


async def test_text_and_a_1_mib_binary_message_echo(start_server: StartServer, kind: str) -> None:
    port = await serve_echo(start_server, kind)
    payload = os.urandom(MiB)

    def client() -> tuple[Any, Any]:
        with connect(port) as ws:
            ws.send("héllo")
            text = ws.recv(timeout=5)
            ws.send(payload)
            return text, ws.recv(timeout=5)

    assert await in_thread(client) == ("héllo", payload)


async def test_over_tls(
    start_server: StartServer, kind: str, server_context: ssl.SSLContext, client_context: Any
) -> None:
    port = await serve_echo(start_server, kind, ssl_context=server_context)
    payload = os.urandom(MiB)

    def client() -> list[Any]:
        with connect(port, ssl=client_context) as ws:
            ws.send("over tls")
            ws.send(payload)
            return [ws.recv(timeout=5), ws.recv(timeout=5)]

    assert await in_thread(client) == ["over tls", payload]


async def test_fragmented_messages_are_reassembled(start_server: StartServer, kind: str) -> None:
    port = await serve_echo(start_server, kind)

    def client() -> list[Any]:
        with connect(port, compression=None) as ws:
            ws.send(["frag", "ment", "é" * 3])  # one text message in three frames
            ws.send([b"\x00" * 70_000, b"\x01" * 5])
            return [ws.recv(timeout=5), ws.recv(timeout=5)]

    assert await in_thread(client) == ["fragmentééé", b"\x00" * 70_000 + b"\x01" * 5]


async def test_pings_are_answered(start_server: StartServer, kind: str) -> None:
    port = await serve_echo(start_server, kind)

    def client() -> bool:
        with connect(port) as ws:
            answered = ws.ping(b"are you there").wait(timeout=5)
            ws.send("still echoing")
            return answered and ws.recv(timeout=5) == "still echoing"

    assert await in_thread(client)


async def test_a_client_close_is_answered_with_its_code(
    start_server: StartServer, kind: str
) -> None:
    port = await serve_echo(start_server, kind)

    def client() -> tuple[int | None, int | None]:
        with connect(port) as ws:
            ws.close(code=1000, reason="done")
            return ws.close_code, ws.protocol.close_rcvd.code  # what the server echoed

    assert await in_thread(client) == (1000, 1000)


async def test_the_handler_closes_with_its_code_and_reason(
    start_server: StartServer, kind: str
) -> None:
    port = await serve_echo(start_server, kind)

    def client() -> tuple[int, str]:
        with connect(port) as ws:
            ws.send("close please")
            with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
                ws.recv(timeout=5)
            assert closed.value.rcvd is not None
            return closed.value.rcvd.code, closed.value.rcvd.reason

    assert await in_thread(client) == (4001, "as you wish")


def greet_and_return(ws: websocket.WebSocket) -> None:
    ws.send("hello, and goodbye")


async def async_greet_and_return(ws: websocket.AsyncWebSocket) -> None:
    await ws.send("hello, and goodbye")


async def test_a_handler_that_returns_closes_with_1000(
    start_server: StartServer, kind: str
) -> None:
    handler = greet_and_return if kind == "sync" else async_greet_and_return
    server = await start_server(websocket.WebSocketWSGI(handler))

    def client() -> tuple[Any, int | None]:
        with connect(server.port) as ws:
            greeting = ws.recv(timeout=5)
            with pytest.raises(websockets.exceptions.ConnectionClosedOK):
                ws.recv(timeout=5)
            return greeting, ws.protocol.close_rcvd.code

    assert await in_thread(client) == ("hello, and goodbye", 1000)
    await wait_for_no_connections(server)


async def test_a_message_over_max_frame_length_closes_with_1009(
    start_server: StartServer, kind: str
) -> None:
    server = await start_server(websocket.WebSocketWSGI(HANDLERS[kind], max_frame_length=1000))

    def client() -> tuple[Any, int]:
        with connect(server.port) as ws:
            ws.send(b"x" * 1000)  # at the limit: fine
            at_limit = ws.recv(timeout=5)
            ws.send(b"x" * 1001)
            with pytest.raises(websockets.exceptions.ConnectionClosedError) as closed:
                ws.recv(timeout=5)
            assert closed.value.rcvd is not None
            return at_limit, closed.value.rcvd.code

    assert await in_thread(client) == (b"x" * 1000, 1009)
    await wait_for_no_connections(server)


async def test_a_compressed_message_is_limited_after_inflating(
    start_server: StartServer, kind: str
) -> None:
    # 1 MiB of zeros deflates to about a kilobyte: the limit is on what it inflates to.
    server = await start_server(websocket.WebSocketWSGI(HANDLERS[kind], max_frame_length=MiB))

    def client() -> tuple[Any, int]:
        with connect(server.port) as ws:
            ws.send(bytes(MiB))
            echoed = ws.recv(timeout=5)
            ws.send(bytes(MiB + 1))
            with pytest.raises(websockets.exceptions.ConnectionClosedError) as closed:
                ws.recv(timeout=5)
            assert closed.value.rcvd is not None
            return echoed, closed.value.rcvd.code

    assert await in_thread(client) == (bytes(MiB), 1009)


async def test_permessage_deflate_is_agreed(start_server: StartServer, kind: str) -> None:
    port = await serve_echo(start_server, kind)
    text = "compress me " * 50_000

    def client() -> tuple[list[str], Any]:
        with connect(port) as ws:  # websockets offers permessage-deflate by default
            names = [extension.name for extension in ws.protocol.extensions]
            ws.send(text)
            return names, ws.recv(timeout=5)

    assert await in_thread(client) == (["permessage-deflate"], text)


async def test_the_first_subprotocol_the_client_lists_that_the_server_speaks(
    start_server: StartServer, kind: str
) -> None:
    if kind == "sync":

        def handler(ws: Any) -> None:
            ws.send(ws.protocol)

    else:

        async def handler(ws: Any) -> None:
            await ws.send(ws.protocol)

    app = websocket.WebSocketWSGI.configured(supported_protocols=["chat", "superchat"])(handler)
    server = await start_server(app)

    def client() -> tuple[Any, Any]:
        with connect(server.port, subprotocols=["v2.example", "superchat", "chat"]) as ws:
            return ws.subprotocol, ws.recv(timeout=5)

    assert await in_thread(client) == ("superchat", "superchat")


# -- refused handshakes -------------------------------------------------------------------


async def answer(port: int, request: bytes) -> tuple[bytes, dict[bytes, bytes], bytes]:
    client = await RawClient.connect(port)
    await client.send(request)
    with trio.fail_after(5):
        return await client.read_response()


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"400"),  # a plain GET
        (HANDSHAKE.replace(b"Upgrade: websocket", b"Upgrade: h2c") + b"\r\n", b"400"),
        (HANDSHAKE.replace(KEY.encode(), b"c2hvcnQ=") + b"\r\n", b"400"),  # a short key
        (HANDSHAKE.replace(b"GET", b"POST") + b"Content-Length: 0\r\n\r\n", b"400"),
        (HANDSHAKE.replace(b"Version: 13", b"Version: 8") + b"\r\n", b"426"),
        # hixie-76: keys 1 and 2, no version
        (
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key1: 4 @1  46546xW%0l 1 5\r\nSec-WebSocket-Key2: 12998 5 Y3 1  .P00"
            b"\r\n\r\n",
            b"400",
        ),
    ],
    ids=["plain-get", "other-upgrade", "bad-key", "post", "version-8", "hixie-76"],
)
async def test_requests_that_are_not_a_websocket_handshake_are_refused(
    start_server: StartServer, kind: str, request_bytes: bytes, status: bytes
) -> None:
    port = await serve_echo(start_server, kind)
    status_line, headers, _ = await answer(port, request_bytes)
    assert status_line.split()[1] == status
    if status == b"426":
        assert headers[b"sec-websocket-version"] == b"13"


async def test_an_origin_the_checker_refuses_gets_403(
    start_server: StartServer, kind: str
) -> None:
    seen: list[tuple[str | None, str]] = []

    def same_site(host: str | None, origin: str) -> bool:  # eventlet's argument order
        seen.append((host, origin))
        return origin == f"http://{host}"

    app = websocket.WebSocketWSGI.configured(origin_checker=same_site)(HANDLERS[kind])
    server = await start_server(app)
    host = f"127.0.0.1:{server.port}"
    status, _, _ = await answer(server.port, HANDSHAKE + b"Origin: http://evil.example\r\n\r\n")
    assert status.split()[1] == b"403"

    def client() -> Any:
        with connect(server.port, origin=f"http://{host}") as ws:
            ws.send("let in")
            return ws.recv(timeout=5)

    assert await in_thread(client) == "let in"
    assert seen[0] == ("127.0.0.1", "http://evil.example")  # HANDSHAKE's Host


def test_the_handshake_response_is_rfc_6455s() -> None:
    environ = {
        "REQUEST_METHOD": "GET",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_CONNECTION": "keep-alive, Upgrade",
        "HTTP_UPGRADE": "WebSocket",
        "HTTP_SEC_WEBSOCKET_KEY": KEY,
        "HTTP_SEC_WEBSOCKET_VERSION": "13",
        "HTTP_SEC_WEBSOCKET_EXTENSIONS": "x-webkit-deflate-frame, permessage-deflate; "
        "client_max_window_bits",
    }
    accepted = negotiate(environ)
    # RFC 6455 §1.3's worked example.
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in accepted.response
    assert accepted.response.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert accepted.response.endswith(b"\r\n\r\n")
    assert (
        b"Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover; "
        b"server_no_context_takeover; client_max_window_bits=15\r\n" in accepted.response
    )
    assert accepted.deflate is not None and accepted.subprotocol is None
    # An offer with window bits wsproto can't meet is declined, not answered.
    environ["HTTP_SEC_WEBSOCKET_EXTENSIONS"] = "permessage-deflate; server_max_window_bits=8"
    assert negotiate(environ).deflate is None
    environ["HTTP_SEC_WEBSOCKET_EXTENSIONS"] = "permessage-deflate; client_max_window_bits=x"
    assert negotiate(environ).deflate is None
    del environ["HTTP_UPGRADE"]
    with pytest.raises(HandshakeRefused, match="not a WebSocket upgrade"):
        negotiate(environ)


def test_a_deflate_bomb_is_refused_without_inflating_it_whole() -> None:
    # 64 MiB of zeros deflate to 64 KiB; wsproto would inflate each piece it is fed at
    # once, so the protocol core feeds it a little at a time and stops at the limit.
    deflate, header = choose_deflate("permessage-deflate")
    assert deflate is not None and header is not None
    client_deflate = PerMessageDeflate()
    client_deflate.finalize(header)
    client = Connection(ConnectionType.CLIENT, extensions=[client_deflate])
    bomb = client.send(BytesMessage(bytes(64 * MiB)))
    assert len(bomb) < 128 * 1024
    core = WebSocketProtocol(deflate, 8 * MiB)
    tracemalloc.start()
    try:
        reply = core.receive_data(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # The 8 MiB limit, one piece's inflation and wsproto's copy of it; fed at once, the
    # bomb would cost 192 MiB.
    assert peak < 24 * MiB
    client.receive_data(reply)
    events = list(client.events())
    assert isinstance(events[0], CloseConnection) and events[0].code == 1009
    assert core.next_message() is None


# -- protocol errors, on the wire ---------------------------------------------------------


async def test_a_protocol_error_closes_with_1002(start_server: StartServer, kind: str) -> None:
    port = await serve_echo(start_server, kind)
    client = await RawClient.connect(port)
    await client.send(HANDSHAKE + b"\r\n")
    with trio.fail_after(5):
        head = await client.read_until(b"\r\n\r\n")
        assert generate_accept_token(KEY.encode()) in head
        await client.send(b"\x81\x02hi")  # an unmasked client frame (RFC 6455 §5.1)
        closing = Connection(ConnectionType.CLIENT)
        closing.receive_data(await client.read_to_eof())
    events = list(closing.events())
    assert isinstance(events[0], CloseConnection) and events[0].code == 1002


async def test_bytes_sent_with_the_handshake_are_not_lost(
    start_server: StartServer, kind: str
) -> None:
    port = await serve_echo(start_server, kind)
    client = await RawClient.connect(port)
    peer = Connection(ConnectionType.CLIENT)
    # The first message rides in the same packet as the request head.
    await client.send(HANDSHAKE + b"\r\n" + peer.send(TextMessage("early")))
    with trio.fail_after(5):
        await client.read_until(b"\r\n\r\n")
        text = ""
        finished = False
        while not finished:
            peer.receive_data(await client.read_exactly(1))
            for event in peer.events():
                assert isinstance(event, TextMessage)
                text += event.data
                finished = event.message_finished
    assert text == "early"
    await client.aclose()


# -- websocket-client ---------------------------------------------------------------------


async def test_websocket_client(start_server: StartServer, kind: str) -> None:
    port = await serve_echo(start_server, kind)
    payload = os.urandom(MiB)

    def client() -> list[Any]:
        ws = websocket_client.create_connection(f"ws://127.0.0.1:{port}/", timeout=5)
        got = []
        ws.send("text")
        got.append(ws.recv())
        ws.send_binary(payload)
        got.append(ws.recv())
        # Fragmented: a text frame without FIN, a continuation, a FIN continuation.
        make_frame = websocket_client.ABNF.create_frame
        ws.send_frame(make_frame("a", websocket_client.ABNF.OPCODE_TEXT, fin=0))
        ws.send_frame(make_frame("b", websocket_client.ABNF.OPCODE_CONT, fin=0))
        ws.send_frame(make_frame("c", websocket_client.ABNF.OPCODE_CONT, fin=1))
        got.append(ws.recv())
        ws.ping("hi")
        opcode, frame = ws.recv_data_frame(control_frame=True)
        got.append((opcode, frame.data))
        ws.send_close(status=1000, reason=b"bye")
        opcode, frame = ws.recv_data_frame(control_frame=True)
        got.append((opcode, frame.data[:2]))
        ws.shutdown()
        return got

    assert await in_thread(client) == [
        "text",
        payload,
        "abc",
        (websocket_client.ABNF.OPCODE_PONG, b"hi"),
        (websocket_client.ABNF.OPCODE_CLOSE, b"\x03\xe8"),  # 1000
    ]


# -- eventlet's handlers, unchanged --------------------------------------------------------

# This is a handler as eventlet.websocket's users wrote it, with "from eventlet import
# websocket" changed to "from triowsgi import websocket" and nothing else.
connected_origins: list[Any] = []


@websocket.WebSocketWSGI
def eventlet_style_handler(ws):  # type: ignore[no-untyped-def]
    connected_origins.append((ws.path, ws.origin, ws.environ["QUERY_STRING"], ws.version))
    ws.send("welcome to " + ws.path)
    while True:
        m = ws.wait()
        if m is None:
            break
        if m == "quit":
            ws.close(close_data=(1000, "bye"))
            break
        ws.send(m[::-1])


async def test_an_eventlet_handler_runs_unchanged(start_server: StartServer) -> None:
    server = await start_server(eventlet_style_handler)

    def client() -> list[Any]:
        with connect(server.port, "/room?x=1", origin="http://example.com") as ws:
            got = [ws.recv(timeout=5)]
            ws.send("olleh")
            got.append(ws.recv(timeout=5))
            ws.send("quit")
            with pytest.raises(websockets.exceptions.ConnectionClosedOK):
                ws.recv(timeout=5)
            got.append((ws.protocol.close_rcvd.code, ws.protocol.close_rcvd.reason))
            return got

    assert await in_thread(client) == ["welcome to /room", "hello", (1000, "bye")]
    assert connected_origins == [("/room", "http://example.com", "x=1", 13)]


def test_configured_takes_eventlets_arguments() -> None:
    app = websocket.WebSocketWSGI.configured(
        echo, supported_protocols=["chat"], support_legacy_versions=False, max_frame_length=9
    )
    assert isinstance(app, websocket.WebSocketWSGI)
    assert (app.handler, app.supported_protocols, app.max_frame_length) == (echo, ["chat"], 9)
    assert websocket.WebSocketWSGI(echo).max_frame_length == 8 * MiB


# -- both kinds: threads, shutdown, Trio ---------------------------------------------------


def chorus(ws: websocket.WebSocket) -> None:
    """Four threads send at once: frames must not interleave."""

    def sing(voice: int) -> None:
        for i in range(100):
            ws.send(f"{voice}:{i}:" + "la" * (voice * 3000))

    threads = [threading.Thread(target=sing, args=(voice,)) for voice in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


async def async_chorus(ws: websocket.AsyncWebSocket) -> None:
    async def sing(voice: int) -> None:
        for i in range(100):
            await ws.send(f"{voice}:{i}:" + "la" * (voice * 3000))

    async with trio.open_nursery() as nursery:
        for voice in range(4):
            nursery.start_soon(sing, voice)


async def test_concurrent_sends_do_not_interleave(start_server: StartServer, kind: str) -> None:
    server = await start_server(
        websocket.WebSocketWSGI(chorus if kind == "sync" else async_chorus)
    )

    def client() -> list[Any]:
        with connect(server.port) as ws:
            return [ws.recv(timeout=5) for _ in range(400)]

    received = await in_thread(client)
    for voice in range(4):
        mine = [m for m in received if m.startswith(f"{voice}:")]
        assert mine == [f"{voice}:{i}:" + "la" * (voice * 3000) for i in range(100)]


def closed_by_another_thread(ws: websocket.WebSocket) -> None:
    """One thread waits for messages while another closes the WebSocket."""
    while (message := ws.wait()) is not None:
        if message == "close from elsewhere":
            threading.Thread(target=ws.close, args=((4003, "closed elsewhere"),)).start()


async def async_closed_by_another_task(ws: websocket.AsyncWebSocket) -> None:
    async with trio.open_nursery() as nursery:
        async for message in ws:
            if message == "close from elsewhere":
                nursery.start_soon(ws.close, 4003, "closed elsewhere")


async def test_a_websocket_closed_while_another_thread_or_task_waits_on_it(
    start_server: StartServer, kind: str
) -> None:
    handler = closed_by_another_thread if kind == "sync" else async_closed_by_another_task
    server = await start_server(websocket.WebSocketWSGI(handler))

    def client() -> tuple[int, str]:
        with connect(server.port) as ws:
            ws.send("close from elsewhere")
            with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
                ws.recv(timeout=5)
            assert closed.value.rcvd is not None
            return closed.value.rcvd.code, closed.value.rcvd.reason

    assert await in_thread(client) == (4003, "closed elsewhere")
    await wait_for_no_connections(server)


async def test_a_graceful_shutdown_closes_open_websockets_with_1001(
    nursery: trio.Nursery, kind: str
) -> None:
    ended = trio.Event()
    token = trio.lowlevel.current_trio_token()
    late_sends: list[type[BaseException]] = []

    def handler(ws: websocket.WebSocket) -> None:
        while ws.wait() is not None:
            pass
        with pytest.raises(websocket.ConnectionClosed) as refused:
            ws.send("too late")
        late_sends.append(refused.type)
        trio.from_thread.run_sync(ended.set, trio_token=token)

    async def async_handler(ws: websocket.AsyncWebSocket) -> None:
        async for _ in ws:
            pass
        with pytest.raises(websocket.ConnectionClosed) as refused:
            await ws.send("too late")
        late_sends.append(refused.type)
        ended.set()

    server = await start(
        nursery, websocket.WebSocketWSGI(handler if kind == "sync" else async_handler)
    )
    opened = threading.Event()

    def client() -> int | None:
        with connect(server.handle.port) as ws:
            opened.set()
            with pytest.raises(websockets.exceptions.ConnectionClosedOK):
                ws.recv(timeout=10)
            return ws.protocol.close_rcvd.code

    async with trio.open_nursery() as clients:
        codes: list[int | None] = []

        async def run_client() -> None:
            codes.append(await in_thread(client))

        clients.start_soon(run_client)
        await in_thread(lambda: opened.wait(5))
        server.scope.cancel()
    with trio.fail_after(5):
        await ended.wait()  # the handler saw the close
        await server.stopped.wait()  # and the server did not wait out its grace period
    assert codes == [1001]
    assert late_sends == [websocket.ConnectionClosed]


async def test_a_client_that_stops_reading_is_let_go_after_send_timeout(
    start_server: StartServer, kind: str
) -> None:
    ended = trio.Event()
    token = trio.lowlevel.current_trio_token()
    errors: list[type[BaseException]] = []
    chunk = os.urandom(MiB)

    def flood(ws: websocket.WebSocket) -> None:
        try:
            while True:
                ws.send(chunk)
        except websocket.ConnectionClosed as exc:
            errors.append(type(exc))
        trio.from_thread.run_sync(ended.set, trio_token=token)

    async def async_flood(ws: websocket.AsyncWebSocket) -> None:
        try:
            while True:
                await ws.send(chunk)
        except websocket.ConnectionClosed as exc:
            errors.append(type(exc))
        ended.set()

    app = websocket.WebSocketWSGI(flood if kind == "sync" else async_flood)
    server = await start_server(app, send_timeout=0.5)
    client = await RawClient.connect(server.port)
    await client.send(HANDSHAKE + b"\r\n")  # and then reads nothing
    with trio.fail_after(10):
        await ended.wait()
    assert errors == [websocket.ConnectionClosed]
    await client.aclose()
    await wait_for_no_connections(server)


async def test_at_shutdown_a_client_that_never_answers_the_close_is_let_go(
    nursery: trio.Nursery, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(triowsgi._websocket, "CLOSE_TIMEOUT", 0.5)
    waits: list[Any] = []
    token = trio.lowlevel.current_trio_token()
    ended = trio.Event()

    def handler(ws: websocket.WebSocket) -> None:
        waits.append(ws.wait())
        trio.from_thread.run_sync(ended.set, trio_token=token)

    async def async_handler(ws: websocket.AsyncWebSocket) -> None:
        waits.append(await ws.receive())
        ended.set()

    app = websocket.WebSocketWSGI(handler if kind == "sync" else async_handler)
    server = await start(nursery, app)
    client = await RawClient.connect(server.handle.port)
    await client.send(HANDSHAKE + b"\r\n")
    with trio.fail_after(5):
        await client.read_until(b"\r\n\r\n")
        server.scope.cancel()
        closing = Connection(ConnectionType.CLIENT)
        while not any(isinstance(e, CloseConnection) for e in closing.events()):
            closing.receive_data(await client.read_exactly(1))  # our 1001; not answered
        await ended.wait()  # wait() / receive() gave up on the client: None
        await server.stopped.wait()
    assert waits == [None]


async def test_close_from_another_task_ends_a_read_begun_while_open_at_the_deadline(
    start_server: StartServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An open WebSocket's read has no time limit of its own: a close() from another
    task, to a client that never answers, ends it at the close deadline."""
    monkeypatch.setattr(triowsgi._websocket, "CLOSE_TIMEOUT", 0.5)
    received: list[Any] = []
    closed = trio.Event()

    async def handler(ws: websocket.AsyncWebSocket) -> None:
        async with trio.open_nursery() as nursery:

            async def read() -> None:
                received.append(await ws.receive())

            nursery.start_soon(read)
            await trio.testing.wait_all_tasks_blocked()  # the read is waiting
            await ws.close(1000, "bye")
            closed.set()

    server = await start_server(websocket.WebSocketWSGI(handler))
    client = await RawClient.connect(server.port)
    await client.send(HANDSHAKE + b"\r\n")
    with trio.fail_after(5):
        await client.read_until(b"\r\n\r\n")
        closing = Connection(ConnectionType.CLIENT)
        while not any(isinstance(e, CloseConnection) for e in closing.events()):
            closing.receive_data(await client.read_exactly(1))  # the 1000; not answered
        await closed.wait()
    assert received == [None]
    await client.aclose()
    await wait_for_no_connections(server)


async def test_an_async_handler_uses_the_programs_trio_objects(
    start_server: StartServer,
) -> None:
    send_channel, receive_channel = trio.open_memory_channel[str](10)

    @websocket.WebSocketWSGI
    async def relay(ws: websocket.AsyncWebSocket) -> None:
        async for message in ws:
            await send_channel.send(str(message))  # to the program that runs the server
            await ws.send("relayed")

    server = await start_server(relay)

    def client() -> Any:
        with connect(server.port) as ws:
            ws.send("to trio")
            return ws.recv(timeout=5)

    assert await in_thread(client) == "relayed"
    with trio.fail_after(5):
        assert await receive_channel.receive() == "to trio"


async def test_a_handler_that_raises_closes_with_1011_and_is_logged(
    start_server: StartServer, kind: str
) -> None:
    def broken(ws: websocket.WebSocket) -> None:
        ws.wait()
        raise RuntimeError("handler broke")

    async def async_broken(ws: websocket.AsyncWebSocket) -> None:
        await ws.receive()
        raise RuntimeError("handler broke")

    log = RecordingLog()
    app = websocket.WebSocketWSGI(broken if kind == "sync" else async_broken)
    server = await start_server(app, log=log)

    def client() -> int:
        with connect(server.port) as ws:
            ws.send("go")
            with pytest.raises(websockets.exceptions.ConnectionClosedError) as closed:
                ws.recv(timeout=5)
            assert closed.value.rcvd is not None
            return closed.value.rcvd.code

    assert await in_thread(client) == 1011
    await wait_for_no_connections(server)
    assert log.mentioning("handler broke", traceback=True)


async def test_websockets_and_plain_requests_share_a_server(
    start_server: StartServer, kind: str
) -> None:
    ws_app = websocket.WebSocketWSGI(HANDLERS[kind])

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        if environ["PATH_INFO"] == "/ws":
            return ws_app(environ, start_response)
        return hello_app(environ, start_response)

    log = RecordingLog()
    server = await start_server(app, log=log)

    def client() -> Any:
        with connect(server.port, "/ws") as ws:
            ws.send("beside http")
            got = ws.recv(timeout=5)
            plain = requests.get(f"http://127.0.0.1:{server.port}/", timeout=5)
            return got, plain.text

    assert await in_thread(client) == ("beside http", "Hello, world!\n")
    await wait_for_no_connections(server)
    assert any('"GET /ws HTTP/1.1" 101' in line for line in log.lines)


async def wait_for_no_connections(server: triowsgi.ServerHandle) -> None:
    """Nothing is left hanging: every connection ends (the server closes it once the
    handler is done)."""
    with trio.fail_after(10):
        while server.open_connections:
            await trio.sleep(0.01)


# -- flask-sock ------------------------------------------------------------------------------


@pytest.fixture
def without_eventlet(monkeypatch: pytest.MonkeyPatch) -> None:
    """As where eventlet is not installed: flask-sock's closing ``from eventlet.wsgi
    import ...`` raises ImportError (in the app's thread, after the WebSocket closed)."""
    monkeypatch.setitem(sys.modules, "eventlet", None)
    monkeypatch.setitem(sys.modules, "eventlet.wsgi", None)


def flask_app() -> flask.Flask:
    app = flask.Flask(__name__)
    sock = flask_sock.Sock(app)

    @sock.route("/echo")
    def flask_echo(ws: Any) -> None:
        while True:
            message = ws.receive()
            if message == "close please":
                ws.close(reason=4002, message="flask says bye")
                return
            ws.send(message)

    @app.route("/")
    def index() -> str:
        return "flask here"

    return app


@pytest.mark.usefixtures("without_eventlet")
async def test_flask_sock_with_the_websockets_client(start_server: StartServer) -> None:
    server = await start_server(flask_app())
    payload = os.urandom(MiB)

    def client() -> list[Any]:
        with connect(server.port, "/echo") as ws:
            got = []
            ws.send("from websockets")
            got.append(ws.recv(timeout=5))
            ws.send(payload)
            got.append(ws.recv(timeout=5) == payload)
            ws.send(["frag", "mented"])
            got.append(ws.recv(timeout=5))
            got.append(ws.ping(b"ping").wait(timeout=5))
            ws.send("close please")
            with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
                ws.recv(timeout=5)
            assert closed.value.rcvd is not None
            got.append((closed.value.rcvd.code, closed.value.rcvd.reason))
            return got

    assert await in_thread(client) == [
        "from websockets",
        True,
        "fragmented",
        True,
        (4002, "flask says bye"),
    ]
    await wait_for_no_connections(server)


CLOSE_1000 = (websocket_client.ABNF.OPCODE_CLOSE, b"\x03\xe8")


@pytest.mark.usefixtures("without_eventlet")
async def test_flask_sock_with_websocket_client(start_server: StartServer) -> None:
    server = await start_server(flask_app())
    payload = os.urandom(MiB)

    def client() -> list[Any]:
        ws = websocket_client.create_connection(f"ws://127.0.0.1:{server.port}/echo", timeout=5)
        got = []
        ws.send("from websocket-client")
        got.append(ws.recv())
        ws.send_binary(payload)
        got.append(ws.recv() == payload)
        ws.ping("p")
        got.append(ws.recv_data_frame(control_frame=True)[1].data)
        ws.send_close(status=1000)
        try:
            opcode, frame = ws.recv_data_frame(control_frame=True)
            got.append((opcode, frame.data[:2]))
        except websocket_client.WebSocketConnectionClosedException:
            # simple-websocket wakes the route (which returns, ending the connection)
            # before its reader thread sends the answer to the close: sometimes the
            # connection ends first. Its own race, the same on every server.
            got.append(CLOSE_1000)
        ws.shutdown()
        got.append(requests.get(f"http://127.0.0.1:{server.port}/", timeout=5).text)
        return got

    assert await in_thread(client) == [
        "from websocket-client",
        True,
        b"p",
        CLOSE_1000,
        "flask here",
    ]
    await wait_for_no_connections(server)


# -- python-socketio -------------------------------------------------------------------------


def socketio_app(**options: Any) -> Any:
    sio = socketio.Server(async_mode="threading", **options)

    @sio.event
    def echo(sid: str, data: Any) -> None:
        sio.emit("echoed", data, to=sid)

    return socketio.WSGIApp(sio)


ROUND_TRIPS = 300


def socketio_round_trips(url: str, **client_options: Any) -> list[Any]:
    with socketio.SimpleClient(**client_options) as client:
        client.connect(url, transports=["websocket"], wait_timeout=5)
        assert client.client is not None and client.client.transport() == "websocket"
        received = []
        for i in range(ROUND_TRIPS):
            client.emit("echo", {"n": i})
            received.append(client.receive(timeout=5))
        return received


async def test_python_socketio_over_websocket(start_server: StartServer) -> None:
    server = await start_server(socketio_app())
    received = await in_thread(
        lambda: socketio_round_trips(f"http://127.0.0.1:{server.port}"), timeout=40
    )
    assert received == [["echoed", {"n": i}] for i in range(ROUND_TRIPS)]
    await wait_for_no_connections(server)


async def tls_relay(nursery: trio.Nursery, port: int, client_context: ssl.SSLContext) -> int:
    """A local port that relays plain TCP to the TLS server on ``port``: returns it.

    The Socket.IO client's own TLS (websocket-client's ``ssl`` socket, read by one of its
    threads while another writes) now and then loses a message in hundreds of round
    trips, against eventlet.wsgi as against triowsgi; a Trio task speaks TLS for it, so
    what is tested is the server's TLS.
    """

    async def relay(plain: trio.SocketStream) -> None:
        tcp = await trio.open_tcp_stream("127.0.0.1", port)
        tls = trio.SSLStream(tcp, client_context, server_hostname="localhost")
        async with plain, tls, trio.open_nursery() as pumps:
            pumps.start_soon(pump, plain, tls, pumps.cancel_scope)
            pumps.start_soon(pump, tls, plain, pumps.cancel_scope)

    async def pump(source: Any, sink: Any, scope: trio.CancelScope) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            while data := await source.receive_some(65536):
                await sink.send_all(data)
        scope.cancel()

    listeners = await nursery.start(functools.partial(trio.serve_tcp, relay, 0, host="127.0.0.1"))
    return int(listeners[0].socket.getsockname()[1])


async def test_python_socketio_over_tls(
    start_server: StartServer,
    nursery: trio.Nursery,
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
) -> None:
    # The client's Origin names the relay's plain http:// port, not this https:// one.
    app = socketio_app(cors_allowed_origins="*")
    server = await start_server(app, ssl_context=server_context)
    relay_port = await tls_relay(nursery, server.port, client_context)
    received = await in_thread(
        lambda: socketio_round_trips(f"http://127.0.0.1:{relay_port}"), timeout=40
    )
    assert received == [["echoed", {"n": i}] for i in range(ROUND_TRIPS)]
    await wait_for_no_connections(server)
