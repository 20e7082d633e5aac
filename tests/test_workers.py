"""The app's worker threads: ``threads`` bounds the app calls that run at once, and a
thread waiting on its client holds no place in it.

A body that is still on its way, the ``100 Continue`` before it, a response the client is
slow to take: while the app's thread waits for any of these, a queued request runs in its
stead, so slow clients can't lock the others out (eventlet's green threads never could
be). When the bytes are there, the waiting thread takes a place before any queued request.
Each case is run with ``threads`` of 1 or 2, plain and over TLS.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from typing import Any

import pytest
import trio
from conftest import Connect, StartServer, hello_app

from triowsgi._workers import WorkerPool

Environ = dict[str, Any]
# Larger than the body the server reads before calling the app (EAGER_BODY_LIMIT): the
# app is called at once and waits in its own read.
BODY = bytes(range(256)) * 1200  # 307,200 bytes
GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


def post_head(length: int, *, path: bytes = b"/", expect: bool = False) -> bytes:
    extra = b"Expect: 100-continue\r\n" if expect else b""
    return b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n%s\r\n" % (
        path,
        length,
        extra,
    )


class DigestApp:
    """Reads the whole body (``read()``, ``readline()`` or iteration, by path) and answers
    with its length and SHA-256; ``GET`` is a plain hello. Says when each call began."""

    def __init__(self) -> None:
        self.token = trio.lowlevel.current_trio_token()
        self.started = 0
        self.started_changed = trio.Event()

    def _began(self) -> None:
        self.started += 1
        self.started_changed.set()
        self.started_changed = trio.Event()

    async def wait_started(self, n: int) -> None:
        while self.started < n:
            await self.started_changed.wait()

    def __call__(self, environ: Environ, start_response: Any) -> list[bytes]:
        if environ["REQUEST_METHOD"] == "GET":
            return hello_app(environ, start_response)
        trio.from_thread.run_sync(self._began, trio_token=self.token)
        body = environ["wsgi.input"]
        how = environ["PATH_INFO"]
        if how == "/lines":
            data = b"".join(iter(body.readline, b""))
        elif how == "/iter":
            data = b"".join(body)
        else:
            data = body.read()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"%d %s" % (len(data), hashlib.sha256(data).hexdigest().encode())]


def digest(data: bytes) -> bytes:
    return b"%d %s" % (len(data), hashlib.sha256(data).hexdigest().encode())


async def get_answered(connect: Connect, port: int, within: float) -> None:
    client = await connect(port)
    try:
        with trio.fail_after(within):
            await client.send(GET)
            status, _, body = await client.read_response()
        assert (status, body) == (b"HTTP/1.1 200 OK", b"Hello, world!\n")
    finally:
        await client.aclose()


@pytest.mark.parametrize("path", [b"/read", b"/lines", b"/iter"])
async def test_slow_uploads_leave_threads_to_other_requests_and_still_complete(
    start_server: StartServer, transport: tuple[dict[str, Any], Connect], path: bytes
) -> None:
    options, connect = transport
    app = DigestApp()
    server = await start_server(app, threads=2, **options)
    uploads = [await connect(server.port) for _ in range(4)]  # twice the threads
    for upload in uploads:
        await upload.send(post_head(len(BODY), path=path) + BODY[:1000])
    with trio.fail_after(5):
        await app.wait_started(4)  # the last two got threads the first two gave back
    await get_answered(connect, server.port, within=2)
    for upload in uploads:
        await upload.send(BODY[1000:])
    with trio.fail_after(10):
        for upload in uploads:
            status, _, body = await upload.read_response()
            assert (status, body) == (b"HTTP/1.1 200 OK", digest(BODY))


async def test_a_body_that_completes_gets_its_response_while_others_stay_partial(
    start_server: StartServer, transport: tuple[dict[str, Any], Connect]
) -> None:
    options, connect = transport
    app = DigestApp()
    server = await start_server(app, threads=2, max_size=6, **options)
    uploads = [await connect(server.port) for _ in range(6)]  # every connection slot
    for upload in uploads:
        await upload.send(post_head(len(BODY)) + BODY[:500])
    with trio.fail_after(5):
        await app.wait_started(6)
    await uploads[3].send(BODY[500:])
    with trio.fail_after(1):
        status, _, body = await uploads[3].read_response()
    assert (status, body) == (b"HTTP/1.1 200 OK", digest(BODY))


async def test_a_hundred_continue_upload_sent_slowly_holds_no_thread(
    start_server: StartServer, transport: tuple[dict[str, Any], Connect]
) -> None:
    options, connect = transport
    app = DigestApp()
    server = await start_server(app, threads=1, **options)
    upload = await connect(server.port)
    body = b"x" * 5000  # small: the app is called before any of it comes
    await upload.send(post_head(len(body), expect=True))
    with trio.fail_after(5):
        assert await upload.read_until(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
    await upload.send(body[:10])
    await get_answered(connect, server.port, within=2)
    await upload.send(body[10:])
    with trio.fail_after(5):
        status, _, answer = await upload.read_response()
    assert (status, answer) == (b"HTTP/1.1 200 OK", digest(body))


def writing_app(environ: Environ, start_response: Any) -> list[bytes]:
    """8 MiB through ``write()``: more than the socket buffers hold."""
    if environ["REQUEST_METHOD"] == "GET" and environ["PATH_INFO"] == "/":
        return hello_app(environ, start_response)
    write = start_response("200 OK", [("Content-Length", str(8 << 20))])
    for _ in range(8):
        write(b"w" * (1 << 20))
    return []


async def test_a_client_slow_to_read_write_output_holds_no_thread(
    start_server: StartServer, transport: tuple[dict[str, Any], Connect]
) -> None:
    options, connect = transport
    server = await start_server(writing_app, threads=1, **options)
    reader = await connect(server.port)
    await reader.send(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
    with trio.fail_after(5):
        await reader.read_until(b"\r\n\r\n")  # the app is writing; the client stops here
    await get_answered(connect, server.port, within=2)
    with trio.fail_after(10):
        assert await reader.read_exactly(8 << 20) == b"w" * (8 << 20)


# -- the pool itself --------------------------------------------------------------


async def test_a_released_place_runs_a_queued_call_and_comes_back_before_the_next() -> None:
    pool = WorkerPool(1)
    order: list[str] = []
    release_b = threading.Event()
    a_waiting = trio.Event()
    a_may_go = trio.Event()

    async def wait_on_client(release: Callable[[], None]) -> None:
        release()
        a_waiting.set()
        await a_may_go.wait()

    def call_a() -> None:
        pool.wait_on_client(wait_on_client)
        order.append("a resumed")

    def call(name: str, event: threading.Event | None = None) -> None:
        order.append(name)
        if event is not None:
            event.wait(10)

    async def run(fn: Callable[..., None], *args: Any) -> None:
        await pool.run(fn, *args)  # (run() must be awaited in the task that calls it)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run, call_a)
        await a_waiting.wait()
        assert pool.placeless == 1
        # A holds no place: B runs (and holds the only one), C queues behind it.
        b_done = trio.Event()

        async def run_b() -> None:
            await run(call, "b", release_b)
            b_done.set()

        with trio.fail_after(5):
            nursery.start_soon(run_b)
            while "b" not in order:  # (B's thread is not Trio's: it can't set an Event)
                await trio.sleep(0.001)
            a_may_go.set()  # A's bytes are there: it waits for B's place...
            while not pool._resumers:
                await trio.sleep(0.001)
        nursery.start_soon(run, call, "c")
        with trio.move_on_after(0.2):  # ...as C does, but C must not run before B ends
            await b_done.wait()
        assert order == ["b"]
        release_b.set()  # ...and takes it before C
    assert order == ["b", "a resumed", "c"]
    assert pool.placeless == 0


async def test_a_wait_that_needs_no_waiting_keeps_its_place() -> None:
    pool = WorkerPool(1)
    seen: list[int] = []

    async def ready(release: Callable[[], None]) -> bytes:
        seen.append(pool.placeless)  # in Trio, while the thread waits for this
        return b"there"

    assert await pool.run(pool.wait_on_client, ready) == b"there"
    assert seen == [0]  # the thread kept its place: nothing was waited for
    assert pool.placeless == 0


async def test_a_detached_call_holds_no_place_for_the_rest_of_it() -> None:
    """A call that became a connection's handler (a taken socket) holds no place until
    it ends; its thread then leaves the pool."""
    pool = WorkerPool(1)
    detached = threading.Event()
    finish = threading.Event()
    results: list[str] = []

    def handler() -> None:
        pool.detach()
        detached.set()
        finish.wait(10)
        results.append("handled")

    async def run_handler() -> None:
        await pool.run(handler)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_handler)
        assert await trio.to_thread.run_sync(detached.wait, 5)
        assert pool.placeless == 1
        with trio.fail_after(5):  # the only place is free for another call meanwhile
            assert await pool.run(lambda: "other") == "other"
        finish.set()
    assert results == ["handled"]
    assert pool.placeless == 0
    with trio.fail_after(5):
        assert await pool.run(lambda: "after") == "after"
