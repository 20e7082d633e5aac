"""eventlet.wsgi.server's options, end to end: each test fails if its option is ignored.

Options already proven elsewhere are not repeated here:

| option | where |
|---|---|
| ``environ`` (precedence, fresh per request) | test_wsgi.py |
| ``max_size``, ``custom_pool`` shared by two servers | test_server.py |
| ``minimum_chunk_size`` (default, ``1``) and the per-request keys | test_wsgi.py |
| ``keepalive`` ``False`` / ``True`` / seconds idle | test_connection.py, test_limits.py |
| ``url_length_limit`` | test_connection.py, test_hostile_requests.py |
| ``debug`` | test_wsgi.py, test_connection.py, test_logging.py |
| ``socket_timeout`` on a head, on a body the app reads | test_connection.py, test_hostile_*.py |
| ``capitalize_response_headers`` | test_wsgi.py |
| ``log``, ``log_output``, ``log_format``, ``log_x_forwarded_for`` | test_logging.py |
| ``protocol`` / ``server_event`` in ``Config`` and ``server()`` | test_config.py |

What is left is here: ``max_http_version="HTTP/1.0"``, ``custom_pool`` overriding
``max_size``, ``minimum_chunk_size`` thresholds against the per-request keys, the waits
``keepalive`` and ``socket_timeout`` bound (and those they don't), a reader too slow for
``socket_timeout``, the headers of ``100 Continue``, the deprecated options on every
entry point, and the blocking ``server()`` on a unix socket (``serve_listeners`` on one is
in test_server.py).
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from conftest import RawClient, StartServer, hello_app

import triowsgi

GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
OK_10 = b"HTTP/1.0 200 OK"
OK_11 = b"HTTP/1.1 200 OK"

Environ = dict[str, Any]


def pieces_app(environ: Environ, start_response: Any) -> Iterator[bytes]:
    """A generator: its length is unknown when the head goes out (with a small chunk size)."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield from (b"aa", b"bb", b"cc")


def failing_app(environ: Environ, start_response: Any) -> list[bytes]:
    raise RuntimeError("boom")


def echo_app(environ: Environ, start_response: Any) -> list[bytes]:
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]


def split_response(data: bytes) -> tuple[bytes, dict[bytes, bytes], bytes]:
    """Status line, lower-cased headers and the raw body of one response read to EOF."""
    head, _, body = data.partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


async def exchange(port: int, request: bytes) -> bytes:
    """Send ``request`` and read until the server closes the connection."""
    client = await RawClient.connect(port)
    await client.send(request)
    with trio.fail_after(10):
        data = await client.read_to_eof()
    await client.aclose()
    return data


async def assert_closed_by_server(client: RawClient, within: float) -> None:
    with trio.fail_after(within):
        assert await client.read_to_eof() == b""
    await client.aclose()


# -- max_http_version="HTTP/1.0" -------------------------------------------------------


async def test_http10_max_version_answers_a_list_with_http10_and_closes(
    start_server: StartServer,
) -> None:
    server = await start_server(hello_app, max_http_version="HTTP/1.0")
    data = await exchange(server.port, GET + GET)  # the second request is never answered
    status, headers, body = split_response(data)
    assert status == OK_10
    assert headers[b"content-length"] == b"14"
    assert headers[b"connection"] == b"close"
    assert body == b"Hello, world!\n"


async def test_http10_max_version_never_chunks_a_stream_to_an_http11_client(
    start_server: StartServer,
) -> None:
    server = await start_server(pieces_app, max_http_version="HTTP/1.0", minimum_chunk_size=1)
    status, headers, body = split_response(await exchange(server.port, GET))
    assert status == OK_10
    assert b"transfer-encoding" not in headers
    assert b"content-length" not in headers
    assert headers[b"connection"] == b"close"
    assert body == b"aabbcc"  # close-delimited: the bytes themselves, no chunk framing


async def test_http10_max_version_applies_to_the_servers_own_responses(
    start_server: StartServer,
) -> None:
    server = await start_server(failing_app, max_http_version="HTTP/1.0", log_output=False)
    status, headers, _ = split_response(await exchange(server.port, GET))
    assert status == b"HTTP/1.0 500 Internal Server Error"
    assert headers[b"connection"] == b"close"


async def test_http10_max_version_keeps_the_interim_100_at_http11(
    start_server: StartServer,
) -> None:
    # As eventlet: the 100 Continue line always says HTTP/1.1 (the client is 1.1).
    server = await start_server(echo_app, max_http_version="HTTP/1.0")
    client = await RawClient.connect(server.port)
    await client.send(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n"
    )
    assert await client.read_until(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
    await client.send(b"hi")
    with trio.fail_after(10):
        status, _, body = split_response(await client.read_to_eof())
    assert (status, body) == (OK_10, b"hi")
    await client.aclose()


# -- custom_pool ------------------------------------------------------------------------


async def test_custom_pool_replaces_max_size(start_server: StartServer) -> None:
    pool = trio.CapacityLimiter(2)
    server = await start_server(hello_app, custom_pool=pool, max_size=1)
    first, second = [await RawClient.connect(server.port) for _ in range(2)]
    with trio.fail_after(5):  # max_size=1 would hold the second in the backlog
        for client in (first, second):
            await client.send(GET)
            assert (await client.read_response())[0] == OK_11
    assert pool.borrowed_tokens == 2  # both idle keep-alive connections hold a slot
    for client in (first, second):
        await client.aclose()


# -- minimum_chunk_size and the per-request keys -----------------------------------------


async def test_minimum_chunk_size_is_the_batch_threshold(start_server: StartServer) -> None:
    server = await start_server(pieces_app, minimum_chunk_size=4)
    data = await exchange(server.port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    _, headers, body = split_response(data)
    assert headers[b"transfer-encoding"] == b"chunked"
    assert body == b"4\r\naabb\r\n2\r\ncc\r\n0\r\n\r\n"  # "aa"+"bb" reach 4; "cc" ends it


@pytest.mark.parametrize(
    "key", ["triowsgi.minimum_write_chunk_size", "eventlet.minimum_write_chunk_size"]
)
async def test_the_per_request_key_overrides_the_option(
    start_server: StartServer, key: str
) -> None:
    def app(environ: Environ, start_response: Any) -> Iterator[bytes]:
        environ[key] = 4096  # read after the app returns its iterable, as in eventlet
        return pieces_app(environ, start_response)

    server = await start_server(app, minimum_chunk_size=1)
    data = await exchange(server.port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    _, headers, body = split_response(data)
    # Coalesced whole despite minimum_chunk_size=1, so its length was known.
    assert (headers[b"content-length"], body) == (b"6", b"aabbcc")


# -- keepalive and socket_timeout: which waits they bound -------------------------------


@pytest.mark.parametrize(
    ("options", "idle", "reused"),
    [
        ({"socket_timeout": 0.2}, 0.6, False),  # keepalive=True: idle bounded by it
        ({"socket_timeout": 0.2, "keepalive": 5}, 0.6, True),  # a number replaces it
        ({"keepalive": 0.2, "socket_timeout": 5}, 0.6, False),
    ],
    ids=["socket_timeout-bounds-idle", "keepalive-longer", "keepalive-shorter"],
)
async def test_the_idle_wait_between_requests(
    start_server: StartServer, options: dict[str, Any], idle: float, reused: bool
) -> None:
    server = await start_server(hello_app, **options)
    client = await RawClient.connect(server.port)
    await client.send(GET)
    assert (await client.read_response())[0] == OK_11
    await trio.sleep(idle)  # the point of the test: idle longer than one of the timeouts
    if reused:
        await client.send(GET)
        with trio.fail_after(5):
            assert (await client.read_response())[0] == OK_11
        await client.aclose()
    else:
        await assert_closed_by_server(client, within=1)


async def test_keepalive_seconds_do_not_bound_a_request_in_progress(
    start_server: StartServer,
) -> None:
    # eventlet: the keepalive number applies only while waiting for a request line.
    server = await start_server(echo_app, keepalive=0.2)
    client = await RawClient.connect(server.port)
    await client.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nha")
    await trio.sleep(0.5)  # a body slower than keepalive, but within socket_timeout (None)
    await client.send(b"lf")
    with trio.fail_after(5):
        status, _, body = await client.read_response()
    assert (status, body) == (OK_11, b"half")
    await client.aclose()


class EndlessDownload:
    """Streams 64 MiB in 64 KiB pieces, through the iterable or ``write()``; ``ended`` is
    set by the result's ``close()`` or by an exception ``write()`` raised into the app."""

    PIECE = b"x" * 65536
    TOTAL = 1024 * len(PIECE)

    def __init__(self) -> None:
        self.ended = threading.Event()
        self.write_error: BaseException | None = None
        self.exhausted = False

    def __call__(self, environ: Environ, start_response: Any) -> Any:
        write = start_response("200 OK", [("Content-Type", "application/octet-stream")])
        if environ["PATH_INFO"] == "/write":
            try:
                for _ in range(1024):
                    write(self.PIECE)
            except BaseException as exc:
                self.write_error = exc
                self.ended.set()
                raise
        return self.Result(self)

    class Result:
        def __init__(self, app: EndlessDownload) -> None:
            self._app = app

        def __iter__(self) -> Iterator[bytes]:
            for _ in range(1024):
                yield self._app.PIECE
            self._app.exhausted = True

        def close(self) -> None:
            self._app.ended.set()


@pytest.mark.parametrize("path", ["/iterable", "/write"])
async def test_a_reader_stalled_longer_than_socket_timeout_is_dropped(
    start_server: StartServer, path: str
) -> None:
    app = EndlessDownload()
    server = await start_server(app, socket_timeout=0.3, log_output=False)
    client = await RawClient.connect(server.port)
    # A small receive buffer so the server's sends block soon.
    client.stream.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    await client.send(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    # The client reads nothing: the kernel buffers fill, a send_all blocks, and after
    # socket_timeout the server gives up on the connection: the app's result is closed,
    # or its write() raises.
    assert await trio.to_thread.run_sync(app.ended.wait, 10)
    with trio.fail_after(10):
        received = await client.read_to_eof()
    assert 0 < len(received) < EndlessDownload.TOTAL
    assert not app.exhausted
    if path == "/write":
        assert isinstance(app.write_error, triowsgi.SocketTimeout)
        assert isinstance(app.write_error, TimeoutError)
    await client.aclose()


async def test_a_body_read_stalled_past_socket_timeout_raises_socket_timeout_in_the_app(
    start_server: StartServer,
) -> None:
    errors: list[BaseException] = []

    def app(environ: Environ, start_response: Any) -> list[bytes]:
        try:
            environ["wsgi.input"].read()
        except BaseException as exc:
            errors.append(exc)
            raise
        start_response("200 OK", [])
        return [b"unreachable"]

    server = await start_server(app, socket_timeout=0.3, log_output=False)
    client = await RawClient.connect(server.port)
    await client.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\npart")
    await assert_closed_by_server(client, within=5)
    [error] = errors
    assert type(error) is triowsgi.SocketTimeout
    assert isinstance(error, TimeoutError)


# -- 100 Continue headers ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("server_options", "kwargs", "interim"),
    [
        ({}, {}, b"HTTP/1.1 100 Continue\r\nX-Hello: 1\r\n\r\n"),
        (
            {},
            {"capitalize_response_headers": False},
            b"HTTP/1.1 100 Continue\r\nx-hello: 1\r\n\r\n",
        ),
        # As eventlet: the method's own argument decides, not the server's option.
        (
            {"capitalize_response_headers": False},
            {},
            b"HTTP/1.1 100 Continue\r\nX-Hello: 1\r\n\r\n",
        ),
    ],
    ids=["capitalized", "kept-as-given", "server-option-does-not-apply"],
)
async def test_hundred_continue_response_headers(
    start_server: StartServer,
    server_options: dict[str, Any],
    kwargs: dict[str, Any],
    interim: bytes,
) -> None:
    def app(environ: Environ, start_response: Any) -> list[bytes]:
        wsgi_input = environ["wsgi.input"]
        wsgi_input.set_hundred_continue_response_headers([("x-hello", "1")], **kwargs)
        return echo_app(environ, start_response)

    server = await start_server(app, **server_options)
    client = await RawClient.connect(server.port)
    await client.send(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
    )
    # A client that sends its body only once it has the interim response.
    assert await client.read_until(b"\r\n\r\n") == interim
    await client.send(b"hello")
    with trio.fail_after(5):
        status, _, body = await client.read_response()
    assert (status, body) == (OK_11, b"hello")
    await client.aclose()


# -- eventlet's deprecated options -------------------------------------------------------


async def _serve(**options: Any) -> None:
    await triowsgi.serve(hello_app, 0, "127.0.0.1", **options)


async def _serve_listeners(**options: Any) -> None:
    (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with listener:
        await triowsgi.serve_listeners(hello_app, [listener], **options)


async def _server(**options: Any) -> None:
    def blocking() -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            sock.listen()
            triowsgi.server(sock, hello_app, **options)

    await trio.to_thread.run_sync(blocking)


ENTRY_POINTS = {"serve": _serve, "serve_listeners": _serve_listeners, "server": _server}


@pytest.mark.parametrize(
    ("option", "replacement"),
    [("protocol", "middleware"), ("server_event", "nursery.start(triowsgi.serve")],
)
@pytest.mark.parametrize("entry_point", ENTRY_POINTS)
async def test_deprecated_eventlet_options_name_their_replacement(
    entry_point: str, option: str, replacement: str
) -> None:
    with trio.fail_after(5), pytest.raises(TypeError, match=option) as info:
        await ENTRY_POINTS[entry_point](**{option: object()})
    assert replacement in str(info.value)


# -- the blocking server() on a unix socket ----------------------------------------------

BLOCKING_UNIX_SERVER = """
import signal, json, socket, sys, triowsgi
signal.signal(signal.SIGINT, signal.SIG_IGN)  # as a background job starts: server()
# must still stop on Ctrl-C
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.bind(sys.argv[1])
sock.listen()
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "application/json")])
    keys = ("SERVER_NAME", "SERVER_PORT", "REMOTE_ADDR", "REMOTE_PORT")
    return [json.dumps([environ[k] for k in keys]).encode()]
triowsgi.server(sock, app)
"""


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no unix sockets")
async def test_blocking_server_on_a_unix_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "wsgi.sock")
    process = await trio.lowlevel.open_process(
        [sys.executable, "-c", BLOCKING_UNIX_SERVER, path], stderr=subprocess.PIPE
    )
    assert process.stderr is not None
    try:
        output = ""
        with trio.fail_after(30):
            while f"wsgi starting up on http:{path}" not in output:
                data = await process.stderr.receive_some()
                assert data, output
                output += data.decode()
        client = RawClient(await trio.open_unix_socket(path))
        await client.send(GET)
        with trio.fail_after(5):
            status, _, body = await client.read_response()
        assert (status, json.loads(body)) == (OK_11, ["unix", "", "unix", ""])
        await client.aclose()
        process.send_signal(signal.SIGINT)  # Ctrl-C: server() returns
        with trio.fail_after(30):
            assert await process.wait() == 0
    finally:
        with trio.CancelScope(shield=True):
            process.kill()
            await process.wait()
