"""The server: entry points (serve, serve_listeners, the blocking server()), the handle,
connection limits, shutdown, isolation between connections, and its log lines."""

from __future__ import annotations

import functools
import importlib.util
import io
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from conftest import RawClient, RecordingLog, hello_app

import triowsgi
from triowsgi._server import EVENTLET_POSITIONAL, _eventlet_options

GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
NO_RESPONSE_SECONDS = 0.5


async def get(client: RawClient, path: str = "/") -> tuple[bytes, bytes]:
    """Send one keep-alive GET on ``client``; the status line and body."""
    await client.send(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    status, _, body = await client.read_response()
    return status, body


async def wait_until(predicate: Callable[[], bool]) -> None:
    """Let the server run until ``predicate()`` holds (its tasks react to our I/O)."""
    with trio.fail_after(5):
        while not predicate():
            await trio.testing.wait_all_tasks_blocked(cushion=0.01)


async def assert_no_response_yet(client: RawClient) -> None:
    with trio.move_on_after(NO_RESPONSE_SECONDS):
        data = await client.stream.receive_some(1)
        pytest.fail(f"expected no response yet, got {data!r}")


def environ_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    keys = ("SERVER_NAME", "SERVER_PORT", "REMOTE_ADDR", "REMOTE_PORT", "wsgi.url_scheme")
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps({k: environ[k] for k in keys}).encode()]


def failing_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    if environ["PATH_INFO"] == "/boom":
        raise RuntimeError("boom")
    return hello_app(environ, start_response)


def reset(client: RawClient) -> None:
    """Make closing ``client`` send a TCP RST instead of a FIN."""
    client.stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


# -- the handle ---------------------------------------------------------------------


async def test_serve_reports_where_it_listens(nursery: trio.Nursery) -> None:
    handle = await nursery.start(triowsgi.serve, hello_app, 0, "127.0.0.1")
    assert isinstance(handle, triowsgi.ServerHandle)
    assert handle.port > 0
    assert handle.addresses == [("127.0.0.1", handle.port)]
    assert [s.getsockname() for s in handle.sockets] == handle.addresses


async def test_handle_counts_connections_and_requests(nursery: trio.Nursery) -> None:
    handle = await nursery.start(triowsgi.serve, hello_app, 0, "127.0.0.1")
    assert (handle.open_connections, handle.requests_served) == (0, 0)

    first = await RawClient.connect(handle.port)
    assert await get(first) == (b"HTTP/1.1 200 OK", b"Hello, world!\n")
    assert (handle.open_connections, handle.requests_served) == (1, 1)
    await get(first)
    assert (handle.open_connections, handle.requests_served) == (1, 2)

    second = await RawClient.connect(handle.port)
    await get(second)
    assert (handle.open_connections, handle.requests_served) == (2, 3)

    await first.aclose()
    await wait_until(lambda: handle.open_connections == 1)
    await second.aclose()
    await wait_until(lambda: handle.open_connections == 0)
    assert handle.requests_served == 3


async def test_rejected_requests_are_not_counted_as_served(nursery: trio.Nursery) -> None:
    handle = await nursery.start(triowsgi.serve, hello_app, 0, "127.0.0.1")
    client = await RawClient.connect(handle.port)
    await client.send(b"NONSENSE\r\n\r\n")
    status, _, _ = await client.read_response()
    assert status.startswith(b"HTTP/1.1 400")
    assert handle.requests_served == 0


# -- serve_listeners and server() ------------------------------------------------------


async def test_serve_listeners_on_own_tcp_listeners(nursery: trio.Nursery) -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    handle = await nursery.start(
        functools.partial(triowsgi.serve_listeners, environ_app, listeners)
    )
    port = listeners[0].socket.getsockname()[1]
    assert handle.port == port
    client = await RawClient.connect(port)
    status, body = await get(client)
    assert status == b"HTTP/1.1 200 OK"
    environ = json.loads(body)
    assert environ["SERVER_NAME"] == environ["REMOTE_ADDR"] == "127.0.0.1"
    assert environ["SERVER_PORT"] == str(port)
    assert environ["REMOTE_PORT"] == str(client.stream.socket.getsockname()[1])
    assert environ["wsgi.url_scheme"] == "http"


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no unix sockets")
async def test_serve_listeners_on_a_unix_socket(nursery: trio.Nursery, tmp_path: Path) -> None:
    path = str(tmp_path / "wsgi.sock")
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await sock.bind(path)
    sock.listen()
    log = io.StringIO()
    handle = await nursery.start(
        functools.partial(
            triowsgi.serve_listeners, environ_app, [trio.SocketListener(sock)], log=log
        )
    )
    assert handle.addresses == [path]
    with pytest.raises(RuntimeError):
        _ = handle.port  # no TCP listener to take a port from
    assert f"wsgi starting up on http:{path}\n" in log.getvalue()

    client = RawClient(await trio.open_unix_socket(path))
    status, body = await get(client)
    assert status == b"HTTP/1.1 200 OK"
    environ = json.loads(body)
    assert environ["SERVER_NAME"] == environ["REMOTE_ADDR"] == "unix"
    assert environ["SERVER_PORT"] == environ["REMOTE_PORT"] == ""
    # Keep-alive works on unix sockets too, and the access log says "unix".
    assert (await get(client))[0] == b"HTTP/1.1 200 OK"
    assert re.search(r'^unix - - \[.*\] "GET / HTTP/1.1" 200 ', log.getvalue(), re.M)


BLOCKING_SERVER_SCRIPT = """
import signal, socket, sys, triowsgi
signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal, even if a
# background parent left SIGINT ignored
sock = socket.socket()
sock.bind(("127.0.0.1", 0))
sock.listen()
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"served by server()"]
triowsgi.server(sock, app)
print("returned; socket closed:", sock.fileno() == -1, flush=True)
"""


class ProcessOutput:
    """Collects a subprocess's output stream and waits for patterns in it."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self.text = ""

    async def wait_for(self, pattern: str) -> re.Match[str]:
        with trio.fail_after(30):
            while not (match := re.search(pattern, self.text, re.M)):
                data = await self._stream.receive_some()
                if not data:
                    raise EOFError(f"{pattern!r} never appeared in {self.text!r}")
                self.text += data.decode()
            return match

    async def read_to_eof(self) -> str:
        with trio.fail_after(10):
            while data := await self._stream.receive_some():
                self.text += data.decode()
        return self.text


async def start_script(script: str) -> tuple[trio.Process, ProcessOutput, ProcessOutput]:
    process = await trio.lowlevel.open_process(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdout is not None and process.stderr is not None
    return process, ProcessOutput(process.stdout), ProcessOutput(process.stderr)


async def test_blocking_server_serves_until_interrupted() -> None:
    process, stdout, stderr = await start_script(BLOCKING_SERVER_SCRIPT)
    try:
        started = await stderr.wait_for(
            r"^\((\d+)\) wsgi starting up on http://127\.0\.0\.1:(\d+)$"
        )
        assert int(started[1]) == process.pid
        port = int(started[2])
        client = await RawClient.connect(port)
        assert await get(client) == (b"HTTP/1.1 200 OK", b"served by server()")
        await client.aclose()

        process.send_signal(signal.SIGINT)  # Ctrl-C: server() returns
        with trio.fail_after(30):
            assert await process.wait() == 0
        assert "returned; socket closed: True" in await stdout.read_to_eof()
        assert "Traceback" not in await stderr.read_to_eof()
        with pytest.raises(OSError):
            await trio.open_tcp_stream("127.0.0.1", port)
    finally:
        with trio.CancelScope(shield=True):
            process.kill()
            await process.wait()


# eventlet's own call, options by position: log, environ, max_size, max_http_version,
# protocol, server_event, minimum_chunk_size, log_x_forwarded_for, custom_pool,
# keepalive, then the rest.
POSITIONAL_SERVER_SCRIPT = """
import signal, socket, sys, triowsgi
signal.signal(signal.SIGINT, signal.default_int_handler)
sock = socket.socket()
sock.bind(("127.0.0.1", 0))
sock.listen()
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [environ["extra"].encode()]
triowsgi.server(
    sock, app, sys.stdout, {"extra": "from environ"}, 10, "HTTP/1.0", None, None, 4096,
    True, None, False,
)
"""


async def test_blocking_server_takes_eventlets_options_by_position() -> None:
    process, stdout, stderr = await start_script(POSITIONAL_SERVER_SCRIPT)
    try:
        started = await stdout.wait_for(r"wsgi starting up on http://127\.0\.0\.1:(\d+)$")
        client = await RawClient.connect(int(started[1]))
        await client.send(GET)
        response = await client.read_to_eof()  # HTTP/1.0, keepalive False: it closes
        assert response.startswith(b"HTTP/1.0 200 OK\r\n")
        assert response.endswith(b"\r\n\r\nfrom environ")
        await stdout.wait_for(r'"GET / HTTP/1.1" 200 12 ')  # the log: sys.stdout
        process.send_signal(signal.SIGINT)
        with trio.fail_after(30):
            assert await process.wait() == 0
        assert "Traceback" not in await stderr.read_to_eof()
    finally:
        with trio.CancelScope(shield=True):
            process.kill()
            await process.wait()


def test_the_positional_order_is_eventlets_own() -> None:
    if importlib.util.find_spec("eventlet") is None:
        pytest.skip("eventlet is not installed")
    # In another process: importing eventlet here could patch what the other tests use.
    script = "import inspect, eventlet.wsgi as w; print(*inspect.signature(w.server).parameters)"
    result = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", script],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert tuple(result.stdout.split()) == ("sock", "site", *EVENTLET_POSITIONAL)


def test_positional_options_are_named_in_eventlets_order() -> None:
    log = io.StringIO()
    options = _eventlet_options((log, None, 7, "HTTP/1.1", None, None, 0), {"threads": 2})
    assert options == {
        "log": log,
        "environ": None,
        "max_size": 7,
        "max_http_version": "HTTP/1.1",
        "minimum_chunk_size": 0,
        "threads": 2,
    }
    everything = tuple(range(len(EVENTLET_POSITIONAL)))
    assert _eventlet_options(everything, {}) == dict(
        zip(EVENTLET_POSITIONAL, everything, strict=True)
    )
    assert EVENTLET_POSITIONAL[-1] == "capitalize_response_headers"


@pytest.mark.parametrize(
    ("args", "options", "message"),
    [
        ((None,) * 17, {}, "at most 18 positional arguments"),
        ((None,), {"log": None}, "multiple values for argument 'log'"),
        ((None, None, None, "HTTP/1.1", object()), {}, "'protocol'"),
        ((None, None, None, "HTTP/1.1", None, object()), {}, "'server_event'"),
    ],
    ids=["too-many", "twice", "protocol", "server_event"],
)
def test_blocking_server_refuses_what_eventlet_would_not_take(
    args: tuple[Any, ...], options: dict[str, Any], message: str
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        with pytest.raises(TypeError, match=message):
            triowsgi.server(sock, hello_app, *args, **options)
        assert sock.fileno() != -1  # before running: nothing closed it


# -- connection limits ---------------------------------------------------------------


async def test_max_size_holds_further_clients_in_the_backlog_while_all_are_busy(
    nursery: trio.Nursery,
) -> None:
    gate = threading.Event()

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        if environ["PATH_INFO"] == "/wait":
            gate.wait(10)
        return hello_app(environ, start_response)

    handle = await nursery.start(
        functools.partial(triowsgi.serve, app, 0, "127.0.0.1", max_size=2)
    )
    busy = [await RawClient.connect(handle.port) for _ in range(2)]
    for client in busy:
        await client.send(b"GET /wait HTTP/1.1\r\nHost: x\r\n\r\n")
    await wait_until(lambda: handle.requests_served == 2)

    third = await RawClient.connect(handle.port)  # the kernel accepts it; we don't
    await third.send(GET)
    await assert_no_response_yet(third)
    assert handle.open_connections == 2

    gate.set()
    for client in busy:
        assert (await client.read_response())[0] == b"HTTP/1.1 200 OK"
    # Both are idle now: the longest-idle one makes room for the waiting client.
    status, _, body = await third.read_response()
    assert (status, body) == (b"HTTP/1.1 200 OK", b"Hello, world!\n")
    assert handle.evictions == 1
    assert handle.open_connections == 2


async def test_a_waiting_client_evicts_the_longest_idle_connection(nursery: trio.Nursery) -> None:
    log = RecordingLog()
    handle = await nursery.start(
        functools.partial(
            triowsgi.serve, hello_app, 0, "127.0.0.1", max_size=2, log=log, debug=True
        )
    )
    first, second = [await RawClient.connect(handle.port) for _ in range(2)]
    # Each is idle from its access line on: the server writes it and starts waiting for
    # the next request in one step, and the client may have its response before that.
    assert (await get(first))[0] == b"HTTP/1.1 200 OK"
    await wait_until(lambda: len(log.mentioning('"GET / HTTP/1.1" 200')) == 1)
    assert (await get(second))[0] == b"HTTP/1.1 200 OK"
    await wait_until(lambda: len(log.mentioning('"GET / HTTP/1.1" 200')) == 2)

    third = await RawClient.connect(handle.port)
    assert (await get(third))[0] == b"HTTP/1.1 200 OK"
    assert await first.read_to_eof() == b""  # idle longest: closed to admit the third
    assert (await get(second))[0] == b"HTTP/1.1 200 OK"
    assert handle.evictions == 1
    assert log.mentioning("to admit a new client")


async def test_custom_pool_is_shared_between_servers(nursery: trio.Nursery) -> None:
    pool = trio.CapacityLimiter(1)
    start = functools.partial(triowsgi.serve, hello_app, 0, "127.0.0.1", custom_pool=pool)
    one = await nursery.start(start)
    two = await nursery.start(start)

    holder = await RawClient.connect(one.port)
    assert (await get(holder))[0] == b"HTTP/1.1 200 OK"
    waiter = await RawClient.connect(two.port)
    await waiter.send(GET)
    await assert_no_response_yet(waiter)
    assert pool.borrowed_tokens == 1

    await holder.aclose()
    status, _, _ = await waiter.read_response()
    assert status == b"HTTP/1.1 200 OK"
    assert two.requests_served == 1


async def test_threads_option_serialises_app_calls(nursery: trio.Nursery) -> None:
    app = OverlapApp()
    handle = await nursery.start(functools.partial(triowsgi.serve, app, 0, "127.0.0.1", threads=1))
    await two_concurrent_requests(handle.port)
    assert app.calls == 2
    assert app.max_active == 1


async def test_more_threads_let_app_calls_overlap(nursery: trio.Nursery) -> None:
    # The control for the test above: the same requests do overlap with two threads.
    app = OverlapApp()
    handle = await nursery.start(functools.partial(triowsgi.serve, app, 0, "127.0.0.1", threads=2))
    await two_concurrent_requests(handle.port)
    assert app.max_active == 2


class OverlapApp:
    """Records how many calls run at once; each call waits briefly for a second one."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.active = self.max_active = self.calls = 0
        self.overlapped = threading.Event()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        with self.lock:
            self.calls += 1
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            if self.active > 1:
                self.overlapped.set()
        self.overlapped.wait(0.3)  # a window in which a second call could start
        with self.lock:
            self.active -= 1
        return hello_app(environ, start_response)


async def two_concurrent_requests(port: int) -> None:
    async def one() -> None:
        client = await RawClient.connect(port)
        assert (await get(client))[0] == b"HTTP/1.1 200 OK"
        await client.aclose()

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(one)
            nursery.start_soon(one)


# -- shutdown and isolation ------------------------------------------------------------


async def test_cancelling_serve_closes_the_listener_and_idle_connections(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every connection is closed once FIRST_REQUEST_GRACE has passed: made long here, so
    # that an idle connection left open until then can't pass for one closed at once.
    monkeypatch.setattr(triowsgi._server, "FIRST_REQUEST_GRACE", 5.0)
    log = RecordingLog()
    async with trio.open_nursery() as nursery:
        handle = await nursery.start(
            functools.partial(triowsgi.serve, hello_app, 0, "127.0.0.1", log=log)
        )
        idle = await RawClient.connect(handle.port)
        assert (await get(idle))[0] == b"HTTP/1.1 200 OK"
        # Idle: the server waits for its next request. Its access line is written just
        # before; until then it is still ending the first request, and a connection that
        # ends a request during the shutdown closes by itself.
        await wait_until(lambda: bool(log.mentioning('"GET / HTTP/1.1" 200')))
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
        cancelled = trio.current_time()
    assert trio.current_time() - cancelled < 1.0  # serve returned: nothing held it up
    with pytest.raises(OSError):
        await trio.open_tcp_stream("127.0.0.1", handle.port)
    assert await idle.read_to_eof() == b""


async def test_an_app_error_costs_only_its_own_request(nursery: trio.Nursery) -> None:
    log = io.StringIO()
    handle = await nursery.start(
        functools.partial(triowsgi.serve, failing_app, 0, "127.0.0.1", log=log)
    )
    bystander = await RawClient.connect(handle.port)
    assert (await get(bystander))[0] == b"HTTP/1.1 200 OK"

    victim = await RawClient.connect(handle.port)
    status, body = await get(victim, "/boom")
    assert status == b"HTTP/1.1 500 Internal Server Error"
    assert b"boom" not in body  # debug=False: the traceback goes to the log only
    assert "RuntimeError: boom" in log.getvalue()

    assert await get(bystander) == (b"HTTP/1.1 200 OK", b"Hello, world!\n")


async def test_a_client_reset_costs_only_its_own_connection(nursery: trio.Nursery) -> None:
    log = io.StringIO()
    handle = await nursery.start(
        functools.partial(triowsgi.serve, hello_app, 0, "127.0.0.1", log=log)
    )
    bystander = await RawClient.connect(handle.port)
    assert (await get(bystander))[0] == b"HTTP/1.1 200 OK"

    for partial in (b"", b"GET / HT", b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nab"):
        victim = await RawClient.connect(handle.port)
        await victim.send(partial)
        reset(victim)
        await victim.aclose()
    await wait_until(lambda: handle.open_connections == 1)

    assert await get(bystander) == (b"HTTP/1.1 200 OK", b"Hello, world!\n")
    assert "Traceback" not in log.getvalue()


EMFILE_SERVER_SCRIPT = """
import resource, sys, trio, triowsgi
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
def app(environ, start_response):
    start_response("200 OK", [])
    return [b"still here"]
trio.run(triowsgi.serve, app, 0, "127.0.0.1")
"""


async def test_accept_backs_off_when_out_of_file_descriptors() -> None:
    process, _, stderr = await start_script(EMFILE_SERVER_SCRIPT)
    clients: list[RawClient] = []
    try:
        port = int((await stderr.wait_for(r"wsgi starting up on http://127\.0\.0\.1:(\d+)$"))[1])
        # More connections than the server has descriptors: it accepts until EMFILE,
        # then waits and retries; the rest stay in the kernel's backlog.
        for _ in range(100):
            clients.append(await RawClient.connect(port))
        await stderr.wait_for(r"accept\(\) failed: Too many open files; retrying")
        for client in clients:
            await client.aclose()
        clients.clear()

        with trio.fail_after(10):
            client = await RawClient.connect(port)
            assert await get(client) == (b"HTTP/1.1 200 OK", b"still here")
        assert process.returncode is None
    finally:
        for client in clients:
            await client.aclose()
        with trio.CancelScope(shield=True):
            process.kill()
            await process.wait()


# -- log lines -------------------------------------------------------------------------


async def test_startup_line(nursery: trio.Nursery) -> None:
    log = io.StringIO()
    handle = await nursery.start(
        functools.partial(triowsgi.serve, hello_app, 0, "127.0.0.1", log=log)
    )
    assert log.getvalue() == (
        f"({os.getpid()}) wsgi starting up on http://127.0.0.1:{handle.port}\n"
    )


async def test_access_line_in_eventlets_format(nursery: trio.Nursery) -> None:
    log = io.StringIO()
    handle = await nursery.start(
        functools.partial(triowsgi.serve, hello_app, 0, "127.0.0.1", log=log)
    )
    client = await RawClient.connect(handle.port)
    await get(client)
    # Written after the response (and posthooks), so it may trail the client's read.
    await wait_until(lambda: log.getvalue().count("\n") == 2)
    startup, access = log.getvalue().splitlines()
    assert "wsgi starting up" in startup
    assert re.fullmatch(
        r'127\.0\.0\.1 - - \[\d\d/[A-Z][a-z]{2}/\d{4} \d\d:\d\d:\d\d\] "GET / HTTP/1\.1" '
        r"200 14 \d+\.\d{6}",
        access,
    ), access


async def test_log_output_false_silences_everything(nursery: trio.Nursery) -> None:
    log = io.StringIO()
    handle = await nursery.start(
        functools.partial(
            triowsgi.serve, failing_app, 0, "127.0.0.1", log=log, log_output=False, debug=True
        )
    )
    client = await RawClient.connect(handle.port)
    assert (await get(client))[0] == b"HTTP/1.1 200 OK"
    assert (await get(client, "/boom"))[0] == b"HTTP/1.1 500 Internal Server Error"
    assert handle.requests_served == 2
    await client.aclose()
    await wait_until(lambda: handle.open_connections == 0)  # access lines written by now
    assert log.getvalue() == ""


def test_format_date_time() -> None:
    assert triowsgi.format_date_time(0) == "Thu, 01 Jan 1970 00:00:00 GMT"
    assert triowsgi.format_date_time(1_700_000_000.9) == "Tue, 14 Nov 2023 22:13:20 GMT"


async def test_a_burst_of_clients_is_accepted_and_served(start_server) -> None:
    # Connections waiting in the backlog are taken several per scheduler turn (see
    # _server._Backlog); every one of them must still be served exactly once.
    server = await start_server(hello_app, max_size=300, log_output=False)
    clients = [await RawClient.connect(server.port) for _ in range(200)]
    statuses: list[bytes] = []

    async def ask(client: RawClient) -> None:
        await client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        statuses.append((await client.read_response())[0])

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            for client in clients:
                nursery.start_soon(ask, client)
    assert statuses == [b"HTTP/1.1 200 OK"] * 200
    assert server.open_connections == 200
    assert server.requests_served == 200
    for client in clients:
        await client.aclose()


STUCK_REQUEST_SCRIPT = """
import socket, sys, time, triowsgi
sock = socket.socket()
sock.bind(("127.0.0.1", 0))
sock.listen()
def app(environ, start_response):
    print("in the app", file=sys.stderr, flush=True)
    time.sleep(60)  # longer than the test waits: only the second Ctrl-C ends it
    start_response("200 OK", [])
    return [b"too late"]
triowsgi.server(sock, app, graceful_timeout=60)
print("returned", flush=True)
"""


async def test_a_second_ctrl_c_ends_the_grace_period_of_the_blocking_server() -> None:
    process, stdout, stderr = await start_script(STUCK_REQUEST_SCRIPT)
    try:
        started = await stderr.wait_for(r"wsgi starting up on http://127\.0\.0\.1:(\d+)$")
        client = await RawClient.connect(int(started[1]))
        await client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await stderr.wait_for("in the app")
        process.send_signal(signal.SIGINT)  # graceful: the request may take 60 s
        await stderr.wait_for("wsgi exiting")
        process.send_signal(signal.SIGINT)  # now
        with trio.fail_after(10):
            assert await process.wait() == 0
        assert "returned" in await stdout.read_to_eof()
        assert await client.read_to_eof() == b""  # cut off: no response at all
        await client.aclose()
    finally:
        with trio.CancelScope(shield=True):
            process.kill()
            await process.wait()
