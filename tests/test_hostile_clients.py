"""Slow and vanishing clients: each is bounded by a deadline or noticed at once, costs only
its own connection, and leaves nothing behind.

"Nothing behind" is measured, not assumed: after the client is gone the server's
``open_connections`` is back to 0, and the process has no more open file descriptors,
Trio tasks or busy worker threads than before the client came. (Idle worker threads are
not counted: Trio's thread cache keeps them for a few seconds on purpose.)
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import resource
import socket
import ssl
import struct
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import trio
import trio.testing
import trustme
from conftest import RawClient, RecordingLog, StartServer, hello_app

import triowsgi
from triowsgi._reader import EAGER_BODY_WAIT
from triowsgi._workers import IDLE_NAME

GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
# Time the server is allowed beyond a deadline, for scheduling on a loaded CI machine.
SLACK = 1.0


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def busy_worker_threads() -> int:
    """Worker threads running a job: triowsgi's workers (and Trio's own, for the rest)
    are renamed for each job and given back their idle name before the result is
    handed over."""
    return sum(
        1
        for t in threading.enumerate()
        if t is not threading.main_thread()
        and not t.name.startswith("Trio thread ")
        and t.name != IDLE_NAME
    )


def trio_tasks() -> int:
    def count(task: trio.lowlevel.Task) -> int:
        return 1 + sum(count(t) for n in task.child_nurseries for t in n.child_tasks)

    root = trio.lowlevel.current_root_task()
    assert root is not None
    return count(root)


@dataclasses.dataclass(frozen=True)
class Usage:
    fds: int
    threads: int
    tasks: int

    @classmethod
    def now(cls) -> Usage:
        return cls(open_fds(), busy_worker_threads(), trio_tasks())

    def within(self, baseline: Usage) -> bool:
        return (
            self.fds <= baseline.fds
            and self.threads <= baseline.threads
            and self.tasks <= baseline.tasks
        )


async def eventually(condition: Callable[[], bool], seconds: float = 5) -> None:
    """Wait for ``condition``. The server has no event for "a connection is fully gone"
    (its task ends, then its worker thread returns), so this polls, under a deadline."""
    with trio.fail_after(seconds):
        while not condition():
            await trio.sleep(0.01)


async def assert_nothing_left(server: triowsgi.ServerHandle, baseline: Usage) -> None:
    try:
        await eventually(lambda: server.open_connections == 0 and Usage.now().within(baseline))
    except trio.TooSlowError:
        pytest.fail(
            f"left behind: {server.open_connections} connections, {Usage.now()} > {baseline}"
        )


async def connect(server: triowsgi.ServerHandle, data: bytes = b"") -> RawClient:
    client = await RawClient.connect(server.port)
    await client.send(data)
    return client


def reset(client: RawClient) -> None:
    """Close with an RST instead of a FIN (SO_LINGER with a zero timeout)."""
    sock = client.stream.socket
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class Tracked:
    """An app whose iterable's ``close()`` and whose posthook set threading events, so a
    test can see they ran even when the client vanished.

    ``/upload`` reads the body; ``/download`` streams 64 MiB in 64 KiB pieces; anything
    else is ``hello_app``.
    """

    def __init__(self) -> None:
        self.closed = threading.Event()
        self.posthook_ran = threading.Event()
        self.app_error: BaseException | None = None
        self.entered = trio.Event()
        self.token = trio.lowlevel.current_trio_token()  # app threads aren't Trio's

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        environ["triowsgi.posthooks"].append((lambda env: self.posthook_ran.set(), (), {}))
        path = environ["PATH_INFO"]
        if path == "/upload":
            return self.Result(self, self.upload(environ, start_response))
        if path == "/download":
            return self.Result(self, self.download(start_response))
        return hello_app(environ, start_response)

    def upload(self, environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        trio.from_thread.run_sync(self.entered.set, trio_token=self.token)
        try:
            body = environ["wsgi.input"].read()
        except BaseException as exc:
            self.app_error = exc
            raise
        start_response("200 OK", [])
        yield body

    def download(self, start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        trio.from_thread.run_sync(self.entered.set, trio_token=self.token)
        piece = b"x" * 65536
        for _ in range(1024):
            yield piece

    class Result:
        def __init__(self, owner: Tracked, body: Iterator[bytes]) -> None:
            self.owner = owner
            self.body = body

        def __iter__(self) -> Iterator[bytes]:
            return self.body

        def close(self) -> None:
            self.owner.closed.set()

    async def assert_cleaned_up(self) -> None:
        """close() and the posthook ran (waited for in a thread, bounded)."""
        assert await trio.to_thread.run_sync(self.closed.wait, 5), "close() never ran"
        assert await trio.to_thread.run_sync(self.posthook_ran.wait, 5), "no posthook"


async def warmed_up(server: triowsgi.ServerHandle) -> Usage:
    """The baseline, taken after one request has created what the server keeps (a
    worker thread in Trio's cache, lazily imported modules)."""
    client = await RawClient.connect(server.port)
    await client.send(GET)
    with trio.fail_after(5):
        assert (await client.read_response())[0] == b"HTTP/1.1 200 OK"
    await client.aclose()
    await eventually(lambda: server.open_connections == 0)
    return Usage.now()


# -- slow clients --------------------------------------------------------------------------


async def test_a_head_sent_a_byte_at_a_time_is_dropped_at_header_timeout(
    start_server: StartServer,
) -> None:
    app = Tracked()
    server = await start_server(app, header_timeout=0.5, log=RecordingLog())
    client = await RawClient.connect(server.port)
    head = b"GET / HTTP/1.1\r\nHost: x\r\nUser-Agent: " + b"s" * 200 + b"\r\n\r\n"

    async def slowloris() -> None:
        # One byte every 50 ms: each arrives far within any per-read timeout, and the
        # whole head would take 11 s. The pace is the point of the test.
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            for i in range(len(head)):
                await client.send(head[i : i + 1])
                await trio.sleep(0.05)

    started = trio.current_time()
    async with trio.open_nursery() as trickling:
        trickling.start_soon(slowloris)
        with trio.fail_after(0.5 + SLACK):
            status, headers, _ = await client.read_response()
            assert await client.read_to_eof() == b""
        trickling.cancel_scope.cancel()
    await client.aclose()  # the server, lingering to let its answer arrive, sees the end
    assert status == b"HTTP/1.1 408 Request Timeout"
    assert headers[b"connection"] == b"close"
    assert trio.current_time() - started >= 0.45
    assert not app.entered.is_set()
    await eventually(lambda: server.open_connections == 0)


async def test_a_stalled_body_is_bounded_by_socket_timeout(start_server: StartServer) -> None:
    app = Tracked()
    server = await start_server(app, socket_timeout=0.5, log=RecordingLog())
    baseline = await warmed_up(server)
    client = await RawClient.connect(server.port)
    # Bigger than EAGER_BODY_LIMIT, so the app is running and reading from the socket.
    await client.send(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n")
    with trio.fail_after(5):
        await app.entered.wait()
    await client.send(b"only part of the body")  # and then nothing more
    started = trio.current_time()
    with trio.fail_after(0.5 + SLACK):
        assert await client.read_to_eof() == b""  # no response: the connection is dropped
    assert trio.current_time() - started >= 0.45
    assert isinstance(app.app_error, TimeoutError)  # the app's read raised
    await app.assert_cleaned_up()
    await client.aclose()
    await assert_nothing_left(server, baseline)


@contextlib.contextmanager
def file_limit_at_least(n: int) -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= n:
        yield
        return
    if hard != resource.RLIM_INFINITY and hard < n:
        pytest.skip(f"needs {n} file descriptors, the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (n, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def test_a_flood_of_silent_connections_does_not_stop_a_normal_request(
    start_server: StartServer,
) -> None:
    flood = 2000
    with file_limit_at_least(2 * flood + 200):  # both ends of every connection are ours
        server = await start_server(hello_app, max_size=flood + 100, log=RecordingLog())
        silent: list[trio.SocketStream] = []
        try:
            for _ in range(flood):
                silent.append(await trio.open_tcp_stream("127.0.0.1", server.port))
            await eventually(lambda: server.open_connections == flood)
            with trio.fail_after(5):
                client = await RawClient.connect(server.port)
                await client.send(GET)
                status, _, body = await client.read_response()
            assert (status, body) == (b"HTTP/1.1 200 OK", b"Hello, world!\n")
            await client.aclose()
        finally:
            for stream in silent:
                stream.socket.close()
        await eventually(lambda: server.open_connections == 0)


# -- vanishing clients ---------------------------------------------------------------------


async def reset_mid_body(server: triowsgi.ServerHandle, app: Tracked) -> None:
    client = await connect(server, UNFINISHED_UPLOAD)
    with trio.fail_after(5):
        await app.entered.wait()
    reset(client)


async def half_close_mid_body(server: triowsgi.ServerHandle, app: Tracked) -> None:
    client = await connect(server, UNFINISHED_UPLOAD)
    with trio.fail_after(5):
        await app.entered.wait()
    await client.stream.send_eof()  # "that's all you get", but still listening
    response = await client.read_to_eof()
    await client.aclose()
    # The body is short of its Content-Length: a malformed request, which the half-closed
    # client can still be told about.
    assert response.startswith(b"HTTP/1.1 400 Bad Request\r\n")


async def reset_mid_response(server: triowsgi.ServerHandle, app: Tracked) -> None:
    client = await connect(server, b"GET /download HTTP/1.1\r\nHost: x\r\n\r\n")
    with trio.fail_after(5):
        await app.entered.wait()
        await client.read_exactly(1024 * 1024)  # part of a 64 MiB response
    reset(client)


# Bigger than EAGER_BODY_LIMIT: the app is called before the body is all there.
UNFINISHED_UPLOAD = b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\nstart"

SCENARIOS: dict[str, Callable[[triowsgi.ServerHandle, Tracked], Awaitable[None]]] = {
    "reset-mid-body": reset_mid_body,
    "half-close-mid-body": half_close_mid_body,
    "reset-mid-response": reset_mid_response,
}


@pytest.mark.parametrize("scenario", SCENARIOS)
async def test_a_vanishing_client_leaves_nothing_behind_and_close_and_posthooks_run(
    start_server: StartServer, scenario: str
) -> None:
    app = Tracked()
    log = RecordingLog()
    server = await start_server(app, log=log)
    baseline = await warmed_up(server)
    await SCENARIOS[scenario](server, app)
    await app.assert_cleaned_up()
    await assert_nothing_left(server, baseline)
    assert not log.mentioning("internal error")
    # Other clients were never affected.
    client = await RawClient.connect(server.port)
    await client.send(GET)
    with trio.fail_after(5):
        assert (await client.read_response())[0] == b"HTTP/1.1 200 OK"
    await client.aclose()


# -- TLS -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context and a client context that trusts it."""
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    return server_context, client_context


def client_hello(client_context: ssl.SSLContext) -> bytes:
    """The first flight of a real TLS handshake."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls_client = client_context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        tls_client.do_handshake()
    return outgoing.read()


async def tls_get(port: int, client_context: ssl.SSLContext) -> bytes:
    stream = trio.SSLStream(
        await trio.open_tcp_stream("127.0.0.1", port),
        client_context,
        server_hostname="localhost",
        https_compatible=True,
    )
    client = RawClient(stream)  # type: ignore[arg-type]
    await client.send(GET)
    with trio.fail_after(5):
        status, _, _ = await client.read_response()
    await stream.aclose()
    return status


@pytest.mark.parametrize("sent", ["nothing", "half-a-client-hello", "a-client-hello"])
async def test_a_client_reset_during_the_tls_handshake_leaves_nothing_behind(
    start_server: StartServer, tls: tuple[ssl.SSLContext, ssl.SSLContext], sent: str
) -> None:
    server_context, client_context = tls
    log = RecordingLog()
    server = await start_server(hello_app, ssl_context=server_context, log=log)
    with trio.fail_after(5):
        assert await tls_get(server.port, client_context) == b"HTTP/1.1 200 OK"
    await eventually(lambda: server.open_connections == 0)
    baseline = Usage.now()
    hello = client_hello(client_context)
    first_flight = {"nothing": b"", "half-a-client-hello": hello[: len(hello) // 2]}
    client = await connect(server, first_flight.get(sent, hello))
    await eventually(lambda: server.open_connections == 1)
    reset(client)
    await assert_nothing_left(server, baseline)
    assert not log.mentioning("internal error")
    with trio.fail_after(5):
        assert await tls_get(server.port, client_context) == b"HTTP/1.1 200 OK"


async def test_a_stalled_tls_handshake_is_dropped_at_header_timeout(
    start_server: StartServer, tls: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    # Without this bound a client that starts a handshake and stops would hold its
    # connection for ever by default (socket_timeout is None): slowloris over TLS.
    server_context, client_context = tls
    server = await start_server(
        hello_app, ssl_context=server_context, header_timeout=0.5, log=RecordingLog()
    )
    hello = client_hello(client_context)
    client = await connect(server, hello[: len(hello) // 2])
    await eventually(lambda: server.open_connections == 1)
    started = trio.current_time()
    with trio.fail_after(0.5 + SLACK):
        assert await client.read_to_eof() == b""  # dropped: no HTTP answer is possible
    assert trio.current_time() - started >= 0.4
    await eventually(lambda: server.open_connections == 0)
    await client.aclose()


# -- safe by default: no client holds a connection or a slot without making progress -------


async def test_a_flood_of_silent_connections_twice_max_size_does_not_lock_out_a_request(
    start_server: StartServer,
) -> None:
    max_size = 8
    log = RecordingLog()
    server = await start_server(hello_app, max_size=max_size, log=log, debug=True)
    flood = [await RawClient.connect(server.port) for _ in range(2 * max_size)]
    client = await RawClient.connect(server.port)
    await client.send(GET)
    status, _, body = await client.read_response()
    assert (status, body) == (b"HTTP/1.1 200 OK", b"Hello, world!\n")
    # Each newcomer evicted the longest-silent connection: the first max_size + 1 of
    # the flood are closed, the last ones hold the slots (until header_timeout).
    assert server.evictions == max_size + 1
    for silent in flood[: max_size + 1]:
        assert await silent.read_to_eof() == b""
    assert len(log.mentioning("to admit a new client")) == max_size + 1
    for silent in flood:
        await silent.aclose()
    await client.aclose()
    await eventually(lambda: server.open_connections == 0)


async def test_a_connection_busy_with_a_request_is_never_evicted(
    start_server: StartServer,
) -> None:
    app = Tracked()
    server = await start_server(app, max_size=1, log=RecordingLog())
    length = 300_000  # more than is read before the app runs: the app reads it
    head = b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % length
    uploading = await connect(server, head + b"start")
    with trio.fail_after(5):
        await app.entered.wait()  # in the app, reading a body that doesn't come yet
    waiting = await connect(server, GET)
    with trio.move_on_after(0.3):
        data = await waiting.stream.receive_some(1)
        pytest.fail(f"a client was admitted while every connection was busy: {data!r}")
    assert server.evictions == 0
    await uploading.send(b"x" * (length - 5))
    assert (await uploading.read_response())[0] == b"HTTP/1.1 200 OK"
    # Idle now: it makes room for the client waiting in the backlog.
    assert (await waiting.read_response())[0] == b"HTTP/1.1 200 OK"
    assert server.evictions == 1
    await uploading.aclose()
    await waiting.aclose()


async def test_a_silent_connection_is_closed_header_timeout_after_the_accept(
    start_server: StartServer,
) -> None:
    server = await start_server(hello_app, header_timeout=0.5, log=RecordingLog())
    client = await RawClient.connect(server.port)
    started = trio.current_time()
    with trio.fail_after(0.5 + SLACK):
        assert await client.read_to_eof() == b""  # no request: nothing to answer
    assert trio.current_time() - started >= 0.45
    await client.aclose()
    await eventually(lambda: server.open_connections == 0)


async def test_the_first_head_is_timed_from_the_accept_not_its_first_byte(
    start_server: StartServer,
) -> None:
    header_timeout = 2.0
    server = await start_server(hello_app, header_timeout=header_timeout, log=RecordingLog())
    client = await RawClient.connect(server.port)
    started = trio.current_time()
    silence = 0.9 * header_timeout
    await trio.sleep(silence)  # silent for most of header_timeout: the point of the test
    await client.send(b"GET / HTTP/1.1\r\n")  # and the rest never comes
    with trio.fail_after(header_timeout - silence + SLACK):
        status, _, _ = await client.read_response()
    assert status == b"HTTP/1.1 408 Request Timeout"
    # From the accept: 2.0 s. Timed from its first byte, the head would get 3.8 s.
    elapsed = trio.current_time() - started
    assert header_timeout - 0.05 <= elapsed < header_timeout + silence / 2, elapsed
    await client.aclose()


async def test_a_tls_client_that_never_speaks_is_closed_header_timeout_after_the_accept(
    start_server: StartServer, tls: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    server_context, _ = tls
    server = await start_server(
        hello_app, ssl_context=server_context, header_timeout=0.5, log=RecordingLog()
    )
    client = await RawClient.connect(server.port)
    started = trio.current_time()
    with trio.fail_after(0.5 + SLACK):
        assert await client.read_to_eof() == b""
    assert trio.current_time() - started >= 0.45
    await client.aclose()
    await eventually(lambda: server.open_connections == 0)


@pytest.fixture
def jumping_clock() -> trio.testing.MockClock:
    """A clock that jumps to the next deadline once every task has waited 0.2 s (real):
    long enough for a worker thread or the kernel to deliver what a task waits for."""
    return trio.testing.MockClock(autojump_threshold=0.2)


async def test_by_default_idle_keepalive_lasts_75_s_and_a_silent_client_20_s(
    start_server: StartServer, jumping_clock: trio.testing.MockClock
) -> None:
    # The defaults themselves, on a clock that jumps whenever the server only waits.
    server = await start_server(hello_app, log=RecordingLog())
    idle = await RawClient.connect(server.port)
    await idle.send(GET)
    assert (await idle.read_response())[0] == b"HTTP/1.1 200 OK"
    silent = await RawClient.connect(server.port)
    started = trio.current_time()
    assert await silent.stream.receive_some(1) == b""
    assert 20 <= trio.current_time() - started < 21
    assert await idle.stream.receive_some(1) == b""
    assert 75 <= trio.current_time() - started < 76
    await idle.aclose()
    await silent.aclose()


async def test_a_first_head_deadline_is_kept_when_others_began_waiting_since(
    start_server: StartServer, jumping_clock: trio.testing.MockClock
) -> None:
    # One task ends every wait for a head at its deadline, in the order the waits began;
    # a wait whose deadline comes before one that began earlier ends by itself, on time.
    server = await start_server(hello_app, log=RecordingLog())
    started = trio.current_time()
    early = await RawClient.connect(server.port)
    await trio.sleep(5)
    late = await RawClient.connect(server.port)
    await trio.sleep(5)
    # Blank lines before a request line are skipped (RFC 9112 §2.2): the early client
    # waits again, still within 20 s of its accept, after the late one began to wait.
    await early.send(b"\r\n")
    assert await early.stream.receive_some(1) == b""
    assert 20 <= trio.current_time() - started < 21
    assert await late.stream.receive_some(1) == b""
    assert 25 <= trio.current_time() - started < 26
    await early.aclose()
    await late.aclose()


async def test_keepalive_inf_keeps_an_idle_connection_for_ever(
    start_server: StartServer, jumping_clock: trio.testing.MockClock
) -> None:
    server = await start_server(hello_app, keepalive=math.inf, log=RecordingLog())
    client = await RawClient.connect(server.port)
    await client.send(GET)
    assert (await client.read_response())[0] == b"HTTP/1.1 200 OK"
    await trio.sleep(24 * 3600)
    await client.send(GET)
    assert (await client.read_response())[0] == b"HTTP/1.1 200 OK"
    await client.aclose()


async def test_a_trickled_body_gets_408_at_the_minimum_rate(start_server: StartServer) -> None:
    app = Tracked()
    # 0.5 s of waiting, plus 1 s per 20 bytes received.
    server = await start_server(app, body_timeout=0.5, body_min_rate=20, log=RecordingLog())
    client = await connect(
        server, b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"
    )

    async def trickle() -> None:
        # A byte every 0.1 s: 10 bytes/s, half the minimum rate. Each read makes
        # progress, so socket_timeout alone would never end it.
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            for _ in range(1000):
                await client.send(b"x")
                await trio.sleep(0.1)

    started = trio.current_time()
    async with trio.open_nursery() as trickling:
        trickling.start_soon(trickle)
        with trio.fail_after(10):
            status, headers, _ = await client.read_response()
            assert await client.read_to_eof() == b""
        trickling.cancel_scope.cancel()
    # Waiting allowed: 0.5 s + n/20 s after n bytes at 10 bytes/s: n/10 = 0.5 + n/20,
    # so n = 10 bytes, at about 1 s.
    assert trio.current_time() - started >= 0.9
    assert status == b"HTTP/1.1 408 Request Timeout"
    assert headers[b"connection"] == b"close"
    assert isinstance(app.app_error, triowsgi.RequestBodyTimeout)
    await client.aclose()


async def test_time_the_app_spends_not_reading_does_not_count_against_the_body(
    start_server: StartServer,
) -> None:
    gate = threading.Event()
    reading = trio.Event()
    token = trio.lowlevel.current_trio_token()

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        gate.wait(10)  # the app is busy: the body's clock stands still
        trio.from_thread.run_sync(reading.set, trio_token=token)
        body = environ["wsgi.input"].read()
        start_response("200 OK", [])
        return [body]

    # The server waits EAGER_BODY_WAIT for the rest before calling the app: that counts.
    body_timeout = EAGER_BODY_WAIT + 0.5
    server = await start_server(
        app, body_timeout=body_timeout, body_min_rate=None, log=RecordingLog()
    )
    client = await connect(server, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nab")
    await trio.sleep(body_timeout + 1.0)  # longer than body_timeout, the app not reading
    gate.set()
    with trio.fail_after(5):
        await reading.wait()
    # The rest comes once the app is waiting for it, within body_timeout: the read
    # really waits (had the busy time counted, that wait would end at once in a 408).
    await trio.sleep(0.2)
    await client.send(b"cd")
    status, _, body = await client.read_response()
    assert (status, body) == (b"HTTP/1.1 200 OK", b"abcd")
    await client.aclose()


async def test_a_client_that_stops_reading_the_response_is_let_go_at_send_timeout(
    start_server: StartServer,
) -> None:
    app = Tracked()
    log = RecordingLog()
    server = await start_server(app, send_timeout=0.5, log=log, debug=True)
    baseline = await warmed_up(server)
    client = await connect(server, b"GET /download HTTP/1.1\r\nHost: x\r\n\r\n")
    client.stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    with trio.fail_after(5):
        await app.entered.wait()
    # Reads nothing: the server's writes stop making progress once the buffers fill.
    await eventually(lambda: bool(log.mentioning("took no response bytes")), 0.5 + 5)
    received = len(await client.read_to_eof())
    assert received < 1024 * 65536  # cut short, not the whole 64 MiB
    await app.assert_cleaned_up()
    await client.aclose()
    await assert_nothing_left(server, baseline)


async def test_a_body_withheld_until_the_response_starts_is_still_served(
    start_server: StartServer,
) -> None:
    # eventlet calls the app at once and it pulls the body; triowsgi reads a small body
    # first, but for a moment only: this client waits for the response to start.
    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [])
        yield b"first;"
        yield environ["wsgi.input"].read()

    server = await start_server(app, minimum_chunk_size=1, log=RecordingLog())
    client = await connect(server, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n")
    await client.read_until(b"first;")
    await client.send(b"abc")
    assert await client.read_until(b"abc")
    await client.aclose()
