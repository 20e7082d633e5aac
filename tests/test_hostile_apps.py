"""Faults on the application's side: whatever the app raises, wherever it raises it, and
however long it blocks, the server answers what it still can, logs the error, and goes
on serving everyone else.

The reactions, by where the app fails:

- before ``start_response``, or in iteration before anything was sent: 500, a log line
  with the traceback, the connection closed, the next client served;
- in iteration after the head went out: the body is cut short (no chunked terminator)
  and the connection closed, which is how HTTP says "this response failed";
- in ``close()``: as in iteration at that point (the response is not complete until the
  iterable is closed);
- in a posthook: the response already went out; a log line, and the next hook still runs.

``BaseException`` subclasses the app raises (``KeyboardInterrupt``, ``SystemExit``, its
own) are application errors like any other: raised in a worker thread, they can't be
Ctrl-C, which Trio delivers to the main thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import trio
from conftest import RawClient, RecordingLog, StartServer, hello_app

import triowsgi

GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
# Time the server is allowed beyond a deadline, for scheduling on a loaded CI machine.
SLACK = 1.0


class AppBaseError(BaseException):
    """An app's own BaseException subclass (as gevent's GreenletExit or a framework's
    "abort request" exception might be)."""


async def get(port: int, request: bytes = GET) -> tuple[bytes, dict[bytes, bytes], bytes]:
    """One request on a fresh connection; the response."""
    client = await RawClient.connect(port)
    try:
        with trio.fail_after(5):
            await client.send(request)
            return await client.read_response()
    finally:
        await client.aclose()


async def assert_still_serving(port: int) -> None:
    status, _, body = await get(port)
    assert (status, body) == (b"HTTP/1.1 200 OK", b"Hello, world!\n")


def routed(app: Callable[..., Any]) -> Callable[..., Any]:
    """``app`` at ``/fail``; ``hello_app`` everywhere else (to show the server still serves)."""

    def dispatch(environ: dict[str, Any], start_response: Any) -> Any:
        if environ["PATH_INFO"] == "/fail":
            return app(environ, start_response)
        return hello_app(environ, start_response)

    return dispatch


FAIL = b"GET /fail HTTP/1.1\r\nHost: x\r\n\r\n"

# -- exceptions at every point ----------------------------------------------------------

EXCEPTIONS = [
    pytest.param(ValueError, id="Exception"),
    pytest.param(MemoryError, id="MemoryError"),
    pytest.param(KeyboardInterrupt, id="KeyboardInterrupt"),
    pytest.param(SystemExit, id="SystemExit"),
    pytest.param(AppBaseError, id="own-BaseException"),
]


def raising_before_start_response(exc: type[BaseException]) -> Callable[..., Any]:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        raise exc("raised before start_response")

    return app


def raising_in_first_iteration(exc: type[BaseException]) -> Callable[..., Any]:
    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        raise exc("raised in iteration, nothing sent")
        yield b""  # a generator

    return app


class ClosingList(list[bytes]):
    """A list result whose close() raises (a framework's teardown failing)."""

    def __init__(self, exc: type[BaseException]) -> None:
        super().__init__([b"never sent"])
        self.exc = exc

    def close(self) -> None:
        raise self.exc("raised in close()")


def raising_in_close(exc: type[BaseException]) -> Callable[..., Any]:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return ClosingList(exc)

    return app


@pytest.mark.parametrize("exc", EXCEPTIONS)
@pytest.mark.parametrize(
    "make_app",
    [raising_before_start_response, raising_in_first_iteration, raising_in_close],
    ids=["before-start_response", "first-iteration", "close"],
)
async def test_an_app_failing_before_anything_was_sent_is_a_500(
    start_server: StartServer,
    make_app: Callable[[type[BaseException]], Any],
    exc: type[BaseException],
) -> None:
    log = RecordingLog()
    server = await start_server(routed(make_app(exc)), log=log)
    status, headers, body = await get(server.port, FAIL)
    assert status == b"HTTP/1.1 500 Internal Server Error"
    assert headers[b"connection"] == b"close"
    assert body == b"500 Internal Server Error\n"  # no traceback: debug is off
    [line] = log.mentioning(traceback=True, text="error in the application")
    assert exc.__name__ in line
    await assert_still_serving(server.port)
    assert not log.mentioning(traceback=True, text="internal error")


def raising_after_the_head(exc: type[BaseException]) -> Callable[..., Any]:
    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"first part, "
        raise exc("raised in iteration, after the head went out")

    return app


class StreamWithFailingClose:
    """Streams two parts; its close() raises."""

    def __init__(self, exc: type[BaseException]) -> None:
        self.exc = exc

    def __iter__(self) -> Iterator[bytes]:
        yield b"first part, "
        yield b"second part"

    def close(self) -> None:
        raise self.exc("raised in close()")


def raising_in_close_after_the_head(exc: type[BaseException]) -> Callable[..., Any]:
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [("Content-Type", "text/plain")])
        environ["triowsgi.minimum_write_chunk_size"] = 1  # the head goes out first
        return StreamWithFailingClose(exc)

    return app


@pytest.mark.parametrize("exc", EXCEPTIONS)
@pytest.mark.parametrize(
    "make_app",
    [raising_after_the_head, raising_in_close_after_the_head],
    ids=["iteration", "close"],
)
async def test_an_app_failing_after_the_head_went_out_cuts_the_body_short(
    start_server: StartServer,
    make_app: Callable[[type[BaseException]], Any],
    exc: type[BaseException],
) -> None:
    log = RecordingLog()
    server = await start_server(routed(make_app(exc)), log=log, minimum_chunk_size=1)
    client = await RawClient.connect(server.port)
    await client.send(FAIL)
    with trio.fail_after(5):
        head = await client.read_until(b"\r\n\r\n")
        rest = await client.read_to_eof()
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    # Whatever was sent, the chunked body never ends: the client knows it is incomplete.
    assert rest.startswith(b"c\r\nfirst part, \r\n")
    assert not rest.endswith(b"0\r\n\r\n")
    [line] = log.mentioning(traceback=True, text="error in the application")
    assert exc.__name__ in line
    await assert_still_serving(server.port)


@pytest.mark.parametrize("exc", EXCEPTIONS)
async def test_a_failing_posthook_is_logged_and_the_next_hook_still_runs(
    start_server: StartServer, exc: type[BaseException]
) -> None:
    ran: list[str] = []

    def failing_hook(environ: dict[str, Any]) -> None:
        ran.append("failing")
        raise exc("raised in a posthook")

    def second_hook(environ: dict[str, Any], tag: str) -> None:
        ran.append(tag)

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        environ["triowsgi.posthooks"] += [(failing_hook, (), {}), (second_hook, ("second",), {})]
        return hello_app(environ, start_response)

    log = RecordingLog()
    server = await start_server(app, log=log)
    client = await RawClient.connect(server.port)
    with trio.fail_after(5):
        await client.send(GET + GET)  # the connection stays usable after the hook fails
        for _ in range(2):
            status, _, body = await client.read_response()
            assert (status, body) == (b"HTTP/1.1 200 OK", b"Hello, world!\n")
    assert ran[:2] == ["failing", "second"]
    [line, *_] = log.mentioning(traceback=True, text="error in posthook")
    assert exc.__name__ in line
    assert not log.mentioning(traceback=True, text="internal error")


async def test_debug_sends_the_traceback_of_a_base_exception(start_server: StartServer) -> None:
    server = await start_server(
        routed(raising_before_start_response(KeyboardInterrupt)), debug=True, log=RecordingLog()
    )
    status, _, body = await get(server.port, FAIL)
    assert status == b"HTTP/1.1 500 Internal Server Error"
    assert b"KeyboardInterrupt: raised before start_response" in body


# -- an app that blocks ----------------------------------------------------------------


async def test_an_app_blocked_forever_does_not_hold_shutdown_past_the_grace_period(
    nursery: trio.Nursery,
) -> None:
    entered = trio.Event()
    release = threading.Event()
    token = trio.lowlevel.current_trio_token()  # app threads aren't Trio's

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        trio.from_thread.run_sync(entered.set, trio_token=token)
        release.wait(10)  # "forever", as far as this test is concerned
        start_response("200 OK", [])
        return [b"too late"]

    scope = trio.CancelScope()
    stopped = trio.Event()

    async def run(task_status: trio.TaskStatus[triowsgi.ServerHandle]) -> None:
        with scope:
            await triowsgi.serve(
                app,
                0,
                "127.0.0.1",
                task_status=task_status,
                graceful_timeout=0.5,
                log=RecordingLog(),
            )
        stopped.set()

    try:
        handle: triowsgi.ServerHandle = await nursery.start(run)
        client = await RawClient.connect(handle.port)
        await client.send(GET)
        with trio.fail_after(5):
            await entered.wait()
        # The client gives up; nothing reads the socket while the app runs, so the
        # connection stays until the app returns or the server stops.
        await client.aclose()
        await trio.testing.wait_all_tasks_blocked()
        assert handle.open_connections == 1
        cancelled_at = trio.current_time()
        scope.cancel()
        with trio.fail_after(0.5 + SLACK):
            await stopped.wait()
        assert trio.current_time() - cancelled_at >= 0.45  # the grace period was given
        assert handle.open_connections == 0
        assert not release.is_set()  # the app is still blocked: it was abandoned
    finally:
        release.set()


# -- threads ---------------------------------------------------------------------------


async def test_a_full_thread_limiter_makes_requests_wait_and_drops_none(
    start_server: StartServer,
) -> None:
    lock = threading.Lock()
    running = peak = 0

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        threading.Event().wait(0.1)  # the app's work
        with lock:
            running -= 1
        start_response("200 OK", [])
        return [environ["PATH_INFO"].encode()]

    server = await start_server(app, threads=2)
    answers: dict[int, bytes] = {}

    async def one(n: int) -> None:
        status, _, body = await get(server.port, b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % n)
        assert status == b"HTTP/1.1 200 OK"
        answers[n] = body

    started = trio.current_time()
    async with trio.open_nursery() as clients:
        for n in range(10):
            clients.start_soon(one, n)
    assert answers == {n: b"/%d" % n for n in range(10)}
    assert peak == 2
    assert trio.current_time() - started >= 0.45  # five rounds of two


async def test_a_memory_error_in_one_request_does_not_affect_a_concurrent_one(
    start_server: StartServer,
) -> None:
    slow_entered = trio.Event()
    release_slow = threading.Event()
    token = trio.lowlevel.current_trio_token()

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        if environ["PATH_INFO"] == "/boom":
            raise MemoryError("cannot allocate the response")
        trio.from_thread.run_sync(slow_entered.set, trio_token=token)
        body = environ["wsgi.input"].read()
        release_slow.wait(5)
        start_response("200 OK", [])
        return [body]

    log = RecordingLog()
    server = await start_server(app, log=log)
    slow = await RawClient.connect(server.port)
    try:
        await slow.send(b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
        with trio.fail_after(5):
            await slow_entered.wait()
        status, _, _ = await get(server.port, b"GET /boom HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == b"HTTP/1.1 500 Internal Server Error"
        release_slow.set()
        with trio.fail_after(5):
            status, headers, body = await slow.read_response()
        assert (status, body) == (b"HTTP/1.1 200 OK", b"hello")
        assert b"connection" not in headers  # and its connection stays usable
    finally:
        release_slow.set()
        await slow.aclose()
    assert len(log.mentioning(traceback=True, text="MemoryError")) == 1
