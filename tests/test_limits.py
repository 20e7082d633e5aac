"""The limits a server puts on each client: body size (413), the time to send a request
head (408), the size of the head (431), the keep-alive idle time, and the worker threads.

Every error response is a complete response followed by a closed connection.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
import trio
from conftest import RawClient, StartServer, hello_app

import triowsgi

# Time the server is allowed beyond a limit, for scheduling on a loaded CI machine.
SLACK = 1.0


class CountingApp:
    """Echoes the request body; counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        self.calls += 1
        body = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return [body]


async def read_error_then_eof(client: RawClient) -> tuple[bytes, dict[bytes, bytes], bytes]:
    """An error response, then the server must close the connection."""
    status, headers, body = await client.read_response()
    assert headers[b"connection"] == b"close"
    assert await client.read_to_eof() == b""
    return status, headers, body


# -- max_body_size --------------------------------------------------------------------


async def test_content_length_over_max_body_size_is_413_before_the_app_runs(
    start_server: StartServer, raw_client: Callable[[int], Any]
) -> None:
    app = CountingApp()
    server = await start_server(app, max_body_size=100)
    client = await raw_client(server.port)
    # Only the head: the server must answer without waiting for a body it won't take.
    await client.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 101\r\n\r\n")
    status, _, body = await read_error_then_eof(client)
    assert status == b"HTTP/1.1 413 Content Too Large"
    assert body.startswith(b"413")
    assert app.calls == 0
    assert server.requests_served == 0


async def test_content_length_at_max_body_size_is_served(
    start_server: StartServer, raw_client: Callable[[int], Any]
) -> None:
    server = await start_server(CountingApp(), max_body_size=100)
    client = await raw_client(server.port)
    await client.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b"a" * 100)
    status, _, body = await client.read_response()
    assert status == b"HTTP/1.1 200 OK"
    assert body == b"a" * 100


@pytest.mark.parametrize("with_head", [True, False], ids=["sent-with-head", "sent-later"])
async def test_chunked_body_over_max_body_size_is_413_while_the_app_reads(
    start_server: StartServer, raw_client: Callable[[int], Any], with_head: bool
) -> None:
    app = CountingApp()
    server = await start_server(app, max_body_size=100)
    client = await raw_client(server.port)
    head = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunks = b"3c\r\n" + b"a" * 60 + b"\r\n" + b"3c\r\n" + b"b" * 60 + b"\r\n0\r\n\r\n"
    if with_head:
        await client.send(head + chunks)  # the whole body arrives with the head
    else:
        await client.send(head)
        await client.send(chunks)
    status, _, _ = await read_error_then_eof(client)
    assert status == b"HTTP/1.1 413 Content Too Large"
    assert app.calls == 1  # no length upfront: only reading finds the body too large


@pytest.mark.parametrize(
    ("chunks", "caught"),
    [
        (b"3c\r\n" + b"a" * 60 + b"\r\n3c\r\n" + b"b" * 60 + b"\r\n0\r\n\r\n", "RequestTooLarge"),
        (b"zz\r\nabc\r\n0\r\n\r\n", "BadRequest"),
    ],
    ids=["too-large", "malformed"],
)
async def test_what_a_chunked_body_raises_into_the_app_is_exported(
    start_server: StartServer, raw_client: Callable[[int], Any], chunks: bytes, caught: str
) -> None:
    # An app can catch them by their public names (and triowsgi.HTTPError, their base).
    exported = getattr(triowsgi, caught)
    assert issubclass(exported, triowsgi.HTTPError)

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        try:
            environ["wsgi.input"].read()
        except triowsgi.HTTPError as exc:
            start_response(f"{exc.status} Refused", [("Content-Type", "text/plain")])
            return [type(exc).__name__.encode()]
        start_response("200 OK", [])
        return [b"read it all"]

    server = await start_server(app, max_body_size=100)
    client = await raw_client(server.port)
    await client.send(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    await client.send(chunks)
    status, _, body = await client.read_response()
    assert body == caught.encode()
    assert status == f"HTTP/1.1 {exported.status} Refused".encode()


async def test_chunked_body_within_max_body_size_is_served(
    start_server: StartServer, raw_client: Callable[[int], Any]
) -> None:
    server = await start_server(CountingApp(), max_body_size=100)
    client = await raw_client(server.port)
    await client.send(
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"32\r\n" + b"a" * 50 + b"\r\n32\r\n" + b"b" * 50 + b"\r\n0\r\n\r\n"
    )
    status, _, body = await client.read_response()
    assert status == b"HTTP/1.1 200 OK"
    assert body == b"a" * 50 + b"b" * 50


# -- header_timeout -------------------------------------------------------------------


async def trickle(client: RawClient, data: bytes, pause: float) -> None:
    """Send ``data`` one byte at a time (a slowloris client); stop when the server
    closes. The pause is the client's pace, which is what the test is about."""
    try:
        for i in range(len(data)):
            await client.send(data[i : i + 1])
            await trio.sleep(pause)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


@pytest.mark.parametrize("pause", [0.1, 0.01], ids=["one-byte-per-100ms", "one-byte-per-10ms"])
async def test_a_head_trickling_in_is_408_after_header_timeout(
    start_server: StartServer,
    raw_client: Callable[[int], Any],
    nursery: trio.Nursery,
    pause: float,
) -> None:
    app = CountingApp()
    server = await start_server(app, header_timeout=0.5)
    client = await raw_client(server.port)
    head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"p" * 1000 + b"\r\n\r\n"
    started = trio.current_time()
    nursery.start_soon(trickle, client, head, pause)
    # The whole head would take 10 s (or 100 s) at this pace: a few seconds still proves
    # the bound, with room for a loaded machine.
    with trio.fail_after(0.5 + 3 * SLACK):
        status, _, _ = await read_error_then_eof(client)
    elapsed = trio.current_time() - started
    assert status == b"HTTP/1.1 408 Request Timeout"
    # Each byte arrives well within the timeout, yet the head as a whole is bounded.
    assert elapsed >= 0.45
    assert app.calls == 0


async def test_a_partial_head_then_silence_is_408_after_header_timeout(
    start_server: StartServer, raw_client: Callable[[int], Any]
) -> None:
    server = await start_server(hello_app, header_timeout=0.5)
    client = await raw_client(server.port)
    await client.send(b"GET / HTTP/1.1\r\nHost:")
    with trio.fail_after(0.5 + SLACK):
        status, _, _ = await read_error_then_eof(client)
    assert status == b"HTTP/1.1 408 Request Timeout"


async def test_header_timeout_does_not_limit_a_fast_head(
    start_server: StartServer, raw_client: Callable[[int], Any]
) -> None:
    server = await start_server(hello_app, header_timeout=0.5)
    client = await raw_client(server.port)
    await client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    status, _, body = await client.read_response()
    assert status == b"HTTP/1.1 200 OK"
    assert body == b"Hello, world!\n"


# -- keep-alive idle timeout ----------------------------------------------------------


async def test_keepalive_seconds_close_an_idle_connection(
    start_server: StartServer, raw_client: Callable[[int], Any]
) -> None:
    server = await start_server(hello_app, keepalive=0.3)
    client = await raw_client(server.port)
    await client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, _ = await client.read_response()
    assert status == b"HTTP/1.1 200 OK"
    assert b"connection" not in headers  # kept alive...
    idle_from = trio.current_time()
    with trio.fail_after(0.3 + SLACK):
        assert await client.read_to_eof() == b""  # ...then closed without a word
    assert trio.current_time() - idle_from >= 0.25


async def test_a_request_within_keepalive_seconds_reuses_the_connection(
    start_server: StartServer, raw_client: Callable[[int], Any]
) -> None:
    server = await start_server(hello_app, keepalive=0.3)
    client = await raw_client(server.port)
    for _ in range(3):
        await client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _, _ = await client.read_response()
        assert status == b"HTTP/1.1 200 OK"


# -- max_header_bytes -----------------------------------------------------------------


def fields(count: int, size: int) -> bytes:
    return b"".join(b"X-Field-%d: %s\r\n" % (i, b"v" * size) for i in range(count))


@pytest.mark.parametrize("complete", [True, False], ids=["complete-head", "unfinished-head"])
async def test_a_head_over_max_header_bytes_is_431(
    start_server: StartServer, raw_client: Callable[[int], Any], complete: bool
) -> None:
    app = CountingApp()
    server = await start_server(app, max_header_bytes=1024)
    client = await raw_client(server.port)
    head = b"GET / HTTP/1.1\r\nHost: x\r\n" + fields(10, 200)  # ~2.2 KB, lines < 8 KiB
    await client.send(head + (b"\r\n" if complete else b""))
    status, _, _ = await read_error_then_eof(client)
    assert status == b"HTTP/1.1 431 Request Header Fields Too Large"
    assert app.calls == 0


async def test_a_head_within_max_header_bytes_is_served(
    start_server: StartServer, raw_client: Callable[[int], Any]
) -> None:
    server = await start_server(hello_app, max_header_bytes=1024)
    client = await raw_client(server.port)
    await client.send(b"GET / HTTP/1.1\r\nHost: x\r\n" + fields(4, 150) + b"\r\n")
    status, _, _ = await client.read_response()
    assert status == b"HTTP/1.1 200 OK"


# -- threads --------------------------------------------------------------------------


class BlockingApp:
    """Each request ``/<n>`` signals it entered the app, then blocks until released."""

    def __init__(self, n: int) -> None:
        self.entered = [trio.Event() for _ in range(n)]
        self.token = trio.lowlevel.current_trio_token()  # app threads aren't Trio's
        self.release = [threading.Event() for _ in range(n)]

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        n = int(environ["PATH_INFO"][1:])
        trio.from_thread.run_sync(self.entered[n].set, trio_token=self.token)
        self.release[n].wait(10)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"done %d" % n]

    def release_all(self) -> None:
        for event in self.release:
            event.set()


async def test_threads_limit_makes_an_extra_request_wait_not_fail(
    start_server: StartServer, raw_client: Callable[[int], Any]
) -> None:
    app = BlockingApp(3)
    server = await start_server(app, threads=2)
    try:
        clients = [await raw_client(server.port) for _ in range(3)]
        with trio.fail_after(5):
            for n in (0, 1):
                await clients[n].send(b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % n)
                await app.entered[n].wait()
            await clients[2].send(b"GET /2 HTTP/1.1\r\nHost: x\r\n\r\n")
        with trio.move_on_after(0.3):  # both threads are busy: /2 must not start
            await app.entered[2].wait()
        assert not app.entered[2].is_set()

        app.release[0].set()
        with trio.fail_after(5):
            assert (await clients[0].read_response())[2] == b"done 0"
            await app.entered[2].wait()  # the freed thread takes the waiting request
            app.release[2].set()
            status, _, body = await clients[2].read_response()
        assert (status, body) == (b"HTTP/1.1 200 OK", b"done 2")
        app.release[1].set()
        with trio.fail_after(5):
            assert (await clients[1].read_response())[2] == b"done 1"
    finally:
        app.release_all()
