"""An app that takes its connection over: eventlet's ``wsgi.input.get_socket()`` and
``eventlet.set_idle``, and triowsgi's ``environ["triowsgi.take_stream"]``.

Once taken, the server writes nothing more on the connection, whatever the app returns or
raises; it logs the status the app wrote and closes the connection when the app (or its
Trio handler) is done. Bytes the client sent right after the head reach the taker first.
A taker holds no place in ``threads``. On a graceful shutdown, a taker is told at once; a
taken socket is closed at the end of the grace period, or at once after ``set_idle``.
"""

from __future__ import annotations

import signal
import struct
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from conftest import Connect, RawClient, RecordingLog, StartServer, hello_app
from test_cli import TIMEOUT, serving
from test_shutdown import start

Environ = dict[str, Any]
UPGRADE = b"GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n"
SWITCHING = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n"
GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


def echo_lines(sock: Any) -> None:
    """Echo what comes, upper-cased, until the client closes or says ``bye``."""
    while True:
        data = sock.recv(4096)
        if not data:
            return
        sock.sendall(data.upper())
        if b"bye" in data:
            return


def socket_app(environ: Environ, start_response: Any) -> list[bytes]:
    """eventlet.websocket's way: take the socket, write the 101, speak, return [] with
    no start_response."""
    if environ["PATH_INFO"] == "/":
        return hello_app(environ, start_response)
    sock = environ["eventlet.input"].get_socket()
    assert sock is environ["wsgi.input"].get_socket()  # one socket, however often asked
    sock.sendall(SWITCHING)
    echo_lines(sock)
    return []


async def test_a_taken_socket_gets_early_bytes_first_and_the_server_adds_nothing(
    start_server: StartServer, transport: tuple[dict[str, Any], Connect]
) -> None:
    options, connect = transport
    log = RecordingLog()
    server = await start_server(socket_app, log=log, **options)
    client = await connect(server.port)
    with trio.fail_after(5):
        await client.send(UPGRADE + b"early ")  # before the 101: must not be lost
        assert await client.read_until(b"\r\n\r\n") == SWITCHING
        assert await client.read_exactly(6) == b"EARLY "
        await client.send(b"hello bye")
        # The app returned []: no response of the server's follows, and it closes.
        assert await client.read_to_eof() == b"HELLO BYE"
    access = log.mentioning("GET /chat")
    assert len(access) == 1 and " 101 " in access[0]


def raising_app(environ: Environ, start_response: Any) -> list[bytes]:
    sock = environ["wsgi.input"].get_socket()
    sock.sendall(SWITCHING)
    raise RuntimeError("the app broke after taking its socket")


async def test_an_app_that_fails_after_taking_its_socket_gets_no_500_appended(
    start_server: StartServer, raw_client: Callable[[int], Awaitable[RawClient]]
) -> None:
    log = RecordingLog()
    server = await start_server(raising_app, log=log)
    client = await raw_client(server.port)
    await client.send(UPGRADE)
    with trio.fail_after(5):
        assert await client.read_to_eof() == SWITCHING
    assert log.mentioning("the app broke after taking its socket", traceback=True)


def probing_app(environ: Environ, start_response: Any) -> list[bytes]:
    """flask-sock's ending in "eventlet mode", without eventlet installed."""
    environ["eventlet.input"].get_socket().sendall(SWITCHING)
    # What `from eventlet.wsgi import ALREADY_HANDLED` raises there.
    raise ModuleNotFoundError("No module named 'eventlet'", name="eventlet")


async def test_flask_socks_eventlet_import_after_taking_is_no_error(
    start_server: StartServer, raw_client: Callable[[int], Awaitable[RawClient]]
) -> None:
    log = RecordingLog()
    server = await start_server(probing_app, log=log)
    client = await raw_client(server.port)
    await client.send(UPGRADE)
    with trio.fail_after(5):
        assert await client.read_to_eof() == SWITCHING
    assert not log.mentioning("Traceback")


async def test_taken_sockets_hold_no_thread(
    start_server: StartServer, transport: tuple[dict[str, Any], Connect]
) -> None:
    options, connect = transport
    server = await start_server(socket_app, threads=1, **options)
    takers = [await connect(server.port) for _ in range(3)]
    with trio.fail_after(5):
        for taker in takers:
            await taker.send(UPGRADE)
            assert await taker.read_until(b"\r\n\r\n") == SWITCHING
        web = await connect(server.port)
        await web.send(GET)
        assert (await web.read_response())[2] == b"Hello, world!\n"
        for taker in takers:
            await taker.send(b"bye")
            assert await taker.read_to_eof() == b"BYE"


async def echo_handler(tunnel: Any) -> None:
    await tunnel.send_all(SWITCHING)
    while data := await tunnel.receive_some():
        await tunnel.send_all(data.upper())
        if b"bye" in data:
            return


def stream_app(environ: Environ, start_response: Any) -> list[bytes]:
    if environ["PATH_INFO"] == "/":
        return hello_app(environ, start_response)
    environ["triowsgi.take_stream"](echo_handler)
    return []


async def test_a_taken_stream_is_served_by_a_trio_handler_without_a_thread(
    start_server: StartServer, transport: tuple[dict[str, Any], Connect]
) -> None:
    options, connect = transport
    log = RecordingLog()
    server = await start_server(stream_app, threads=1, log=log, **options)
    takers = [await connect(server.port) for _ in range(3)]
    with trio.fail_after(5):
        for taker in takers:
            await taker.send(UPGRADE + b"early ")
            assert await taker.read_until(b"\r\n\r\n") == SWITCHING
            assert await taker.read_exactly(6) == b"EARLY "
        web = await connect(server.port)
        await web.send(GET)
        assert (await web.read_response())[2] == b"Hello, world!\n"
        for taker in takers:
            await taker.send(b"bye")
            assert await taker.read_to_eof() == b"BYE"
    access = log.mentioning("GET /chat")
    assert len(access) == 3 and all(" 101 " in line for line in access)


# -- shutdown -----------------------------------------------------------------------


def idle_app(environ: Environ, start_response: Any) -> list[bytes]:
    sock = environ["wsgi.input"].get_socket()
    if environ["PATH_INFO"] == "/idle":
        environ["eventlet.set_idle"]()
    sock.sendall(SWITCHING)
    echo_lines(sock)
    return []


@pytest.mark.parametrize(("path", "closed_at_once"), [(b"/idle", True), (b"/busy", False)])
async def test_at_shutdown_a_taken_socket_closes_at_once_only_after_set_idle(
    nursery: trio.Nursery, path: bytes, closed_at_once: bool
) -> None:
    server = await start(nursery, idle_app, graceful_timeout=2)
    client = await RawClient.connect(server.handle.port)
    await client.send(UPGRADE.replace(b"/chat", path))
    with trio.fail_after(5):
        await client.read_until(b"\r\n\r\n")
    started = trio.current_time()
    server.scope.cancel()
    with trio.fail_after(5):
        assert await client.read_to_eof() == b""
        await server.stopped.wait()
    waited = trio.current_time() - started
    assert (waited < 1.0) if closed_at_once else (waited >= 1.9)


async def closing_handler(tunnel: Any) -> None:
    await tunnel.send_all(SWITCHING)
    await tunnel.closing.wait()
    await tunnel.send_all(b"going away")


def closing_app(environ: Environ, start_response: Any) -> list[bytes]:
    environ["triowsgi.take_stream"](closing_handler)
    return []


async def test_at_shutdown_a_tunnel_is_told_at_once(nursery: trio.Nursery) -> None:
    server = await start(nursery, closing_app, graceful_timeout=30)
    client = await RawClient.connect(server.handle.port)
    await client.send(UPGRADE)
    with trio.fail_after(5):
        await client.read_until(b"\r\n\r\n")
    server.scope.cancel()
    with trio.fail_after(5):  # long before the 30 s grace period
        assert await client.read_to_eof() == b"going away"
        await server.stopped.wait()


# -- WebSockets over the hooks, at scale and at shutdown --------------------------------

WS_APP = """
from triowsgi.websocket import WebSocketWSGI


def echo(ws):
    while (message := ws.wait()) is not None:
        ws.send(message)


async def echo_async(ws):
    async for message in ws:
        await ws.send(message)


threaded, trio_task = WebSocketWSGI(echo), WebSocketWSGI(echo_async)


def app(environ, start_response):
    if environ["PATH_INFO"] == "/":
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]
    return (trio_task if environ["PATH_INFO"] == "/async" else threaded)(environ, start_response)
"""
WS_HANDSHAKE = (
    b"GET /%s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


@pytest.fixture
def ws_app(tmp_path: Path) -> Any:
    (tmp_path / "wsapp.py").write_text(WS_APP)
    sys.path.insert(0, str(tmp_path))
    try:
        import wsapp  # type: ignore[import-not-found]

        yield wsapp.app
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("wsapp", None)


async def test_three_hundred_idle_thread_websockets_leave_the_default_threads_free(
    start_server: StartServer, ws_app: Any
) -> None:
    server = await start_server(ws_app)  # threads=128
    sockets = []
    try:
        with trio.fail_after(30):
            for _ in range(300):
                client = await RawClient.connect(server.port)
                sockets.append(client)
                await client.send(WS_HANDSHAKE % b"sync")
                assert (await client.read_until(b"\r\n\r\n")).startswith(b"HTTP/1.1 101 ")
        with trio.fail_after(2):
            web = await RawClient.connect(server.port)
            await web.send(GET)
            assert (await web.read_response())[2] == b"ok"
    finally:
        for client in sockets:
            await client.aclose()


def test_sigterm_closes_open_websockets_with_1001_and_exits_0(tmp_path: Path) -> None:
    websocket = pytest.importorskip("websocket")  # websocket-client
    (tmp_path / "wsapp.py").write_text(WS_APP)
    with serving("wsapp:app", "--host", "127.0.0.1", "--port", "0", cwd=tmp_path) as server:
        clients = []
        for path in ("sync", "async"):
            url = f"ws://127.0.0.1:{server.port}/{path}"
            client = websocket.create_connection(url, timeout=TIMEOUT)
            client.send(path)
            assert client.recv() == path
            clients.append(client)
        started = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        for client in clients:
            opcode, frame = client.recv_data_frame(True)
            assert opcode == websocket.ABNF.OPCODE_CLOSE
            assert struct.unpack("!H", frame.data[:2])[0] == 1001  # going away
            client.close()
        assert server.wait_exit() == 0
        assert time.monotonic() - started < 10  # not the 30 s grace period
