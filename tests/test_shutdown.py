"""Graceful shutdown: cancelling the scope that runs ``serve`` (or SIGTERM to the command
line) closes the listeners and idle connections at once, lets requests in flight finish
with ``Connection: close`` within ``graceful_timeout``, and then gives up on them."""

from __future__ import annotations

import dataclasses
import functools
import json
import signal
import socket
import textwrap
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from conftest import RawClient, RecordingLog, hello_app
from test_cli import PLAIN_APP, TIMEOUT, serving

import triowsgi
from triowsgi._shutdown import FIRST_REQUEST_GRACE

GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
# Time the server is allowed beyond a deadline, for scheduling on a loaded CI machine.
SLACK = 1.0


class HeldApp:
    """Signals that a request entered the app, then holds it until released (or for
    ``hold`` seconds at most, so an abandoned thread never outlives the test run)."""

    def __init__(self, hold: float = 10) -> None:
        self.entered = trio.Event()
        self.release = threading.Event()
        self.hold = hold
        self.token = trio.lowlevel.current_trio_token()  # app threads aren't Trio's

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        trio.from_thread.run_sync(self.entered.set, trio_token=self.token)
        self.release.wait(self.hold)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"finished after shutdown began"]


@dataclasses.dataclass
class Running:
    handle: triowsgi.ServerHandle
    scope: trio.CancelScope
    stopped: trio.Event
    log: RecordingLog


async def start(nursery: trio.Nursery, app: Any, **options: Any) -> Running:
    """Serve ``app`` in a scope of its own, to cancel as a shutdown."""
    scope = trio.CancelScope()
    stopped = trio.Event()
    log = RecordingLog()

    async def run(task_status: trio.TaskStatus[triowsgi.ServerHandle]) -> None:
        with scope:
            await triowsgi.serve(app, 0, "127.0.0.1", task_status=task_status, log=log, **options)
        stopped.set()

    handle = await nursery.start(run)
    return Running(handle, scope, stopped, log)


async def start_in_flight(
    nursery: trio.Nursery, app: HeldApp, **options: Any
) -> tuple[Running, RawClient]:
    """A server with one request inside ``app``."""
    server = await start(nursery, app, **options)
    client = await RawClient.connect(server.handle.port)
    await client.send(GET)
    with trio.fail_after(5):
        await app.entered.wait()
    return server, client


# -- in process: cancelling serve ------------------------------------------------------


async def test_a_request_in_flight_finishes_with_connection_close(
    nursery: trio.Nursery,
) -> None:
    app = HeldApp()
    server, client = await start_in_flight(nursery, app)
    server.scope.cancel()
    with trio.fail_after(5):
        await server.log.exiting.wait()  # shutdown has begun before the app answers
    app.release.set()
    with trio.fail_after(5):
        status, headers, body = await client.read_response()
        assert await client.read_to_eof() == b""
        await server.stopped.wait()
    assert status == b"HTTP/1.1 200 OK"
    assert headers[b"connection"] == b"close"
    assert body == b"finished after shutdown began"
    assert any('"GET / HTTP/1.1" 200' in line for line in server.log.lines)


async def test_idle_connections_are_closed_at_once(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Made long here, so that an idle connection left open until every connection is
    # closed (at FIRST_REQUEST_GRACE) can't pass for one closed at once.
    first_request_grace = 3.0
    monkeypatch.setattr(triowsgi._server, "FIRST_REQUEST_GRACE", first_request_grace)
    server = await start(nursery, hello_app)
    kept_alive = await RawClient.connect(server.handle.port)
    await kept_alive.send(GET)
    status, headers, _ = await kept_alive.read_response()
    assert status == b"HTTP/1.1 200 OK"
    assert b"connection" not in headers
    never_spoke = await RawClient.connect(server.handle.port)
    await trio.testing.wait_all_tasks_blocked()  # the server has accepted it
    assert server.handle.open_connections == 2

    server.scope.cancel()
    cancelled = trio.current_time()
    with trio.fail_after(SLACK):  # no grace period for connections with nothing to do
        assert await kept_alive.read_to_eof() == b""
    # A connection that has not sent its first request yet gets FIRST_REQUEST_GRACE.
    with trio.fail_after(first_request_grace + SLACK):
        assert await never_spoke.read_to_eof() == b""
        assert trio.current_time() - cancelled >= first_request_grace - 0.05
        await server.stopped.wait()


async def test_a_just_accepted_connection_still_gets_its_first_request_served(
    nursery: trio.Nursery,
) -> None:
    # Under gunicorn, a worker told to stop may have just accepted a connection that
    # another worker could have served: its request is answered, not dropped.
    server = await start(nursery, hello_app)
    client = await RawClient.connect(server.handle.port)
    await trio.testing.wait_all_tasks_blocked()  # the server has accepted it
    server.scope.cancel()
    with trio.fail_after(5):
        await server.log.exiting.wait()  # shutdown has begun before the request arrives
    await client.send(GET)
    with trio.fail_after(FIRST_REQUEST_GRACE + SLACK):
        status, headers, body = await client.read_response()
        assert await client.read_to_eof() == b""
        await server.stopped.wait()
    assert status == b"HTTP/1.1 200 OK"
    assert headers[b"connection"] == b"close"
    assert body == b"Hello, world!\n"


async def test_new_connections_are_refused_while_requests_finish(
    nursery: trio.Nursery,
) -> None:
    app = HeldApp()
    server, client = await start_in_flight(nursery, app)
    server.scope.cancel()
    await trio.testing.wait_all_tasks_blocked()  # only the app is still running
    assert not server.stopped.is_set()
    with pytest.raises(OSError):
        await trio.open_tcp_stream("127.0.0.1", server.handle.port)
    app.release.set()
    with trio.fail_after(5):
        status, _, _ = await client.read_response()
        await server.stopped.wait()
    assert status == b"HTTP/1.1 200 OK"


@pytest.mark.parametrize("threads", [40, 1], ids=["threads-to-spare", "every-thread-stuck"])
async def test_graceful_timeout_bounds_an_app_that_never_finishes(
    nursery: trio.Nursery, threads: int
) -> None:
    app = HeldApp(hold=5)  # "forever", as far as this test is concerned
    try:
        server, client = await start_in_flight(nursery, app, graceful_timeout=0.5, threads=threads)
        cancelled_at = trio.current_time()
        server.scope.cancel()
        with trio.fail_after(0.5 + SLACK):
            await server.stopped.wait()
        assert trio.current_time() - cancelled_at >= 0.45  # the grace period was given
        with trio.fail_after(SLACK):
            assert await client.read_to_eof() == b""  # cut off: no partial response
        assert not any("internal error" in line for line in server.log.lines)
    finally:
        app.release.set()  # let the abandoned thread go


async def test_serve_can_run_again_on_the_same_port_after_shutdown(
    nursery: trio.Nursery,
) -> None:
    server = await start(nursery, hello_app)
    port = server.handle.port
    server.scope.cancel()
    with trio.fail_after(SLACK):
        await server.stopped.wait()
    again = await nursery.start(functools.partial(triowsgi.serve, hello_app, port, "127.0.0.1"))
    client = await RawClient.connect(again.port)
    await client.send(GET)
    assert (await client.read_response())[0] == b"HTTP/1.1 200 OK"


# -- the command line: SIGTERM -----------------------------------------------------------


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "plainapp.py").write_text(textwrap.dedent(PLAIN_APP))
    return tmp_path


class BackgroundGet:
    """A blocking HTTP request in a thread: its response, or the error it ended with."""

    def __init__(self, url: str) -> None:
        self.result: tuple[int, str | None, bytes] | BaseException | None = None
        self._thread = threading.Thread(target=self._get, args=(url,), daemon=True)
        self._thread.start()

    def _get(self, url: str) -> None:
        try:
            with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
                self.result = (response.status, response.headers["Connection"], response.read())
        except BaseException as exc:
            self.result = exc

    def join(self) -> tuple[int, str | None, bytes] | BaseException | None:
        self._thread.join(TIMEOUT)
        return self.result


def assert_not_served(port: int) -> None:
    """A new client is refused (or reset from the closing backlog), never answered."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(1024) == b""
    except (ConnectionRefusedError, ConnectionResetError):
        pass


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_lets_the_request_in_flight_finish_then_exits_0(
    app_dir: Path, signum: signal.Signals
) -> None:
    args = ("--bind", "127.0.0.1:0", "--graceful-timeout", "5", "plainapp:app")
    with serving(*args, cwd=app_dir) as server:
        in_flight = BackgroundGet(f"http://127.0.0.1:{server.port}/slow?1")
        server.wait_for("slow request started")
        signalled_at = time.monotonic()
        server.proc.send_signal(signum)
        server.wait_for("wsgi exiting")
        assert_not_served(server.port)
        result = in_flight.join()
        assert not isinstance(result, BaseException)
        assert result is not None
        status, connection, body = result
        assert (status, connection) == (200, "close")
        assert json.loads(body)["path"] == "/slow"
        assert server.wait_exit() == 0
        assert time.monotonic() - signalled_at < 5  # done when the request was, not later


def test_a_signal_right_after_the_startup_line_is_a_graceful_shutdown(app_dir: Path) -> None:
    # A supervisor may signal as soon as it reads the line; the signal must be handled
    # by then (a race: a few rounds make a regression show).
    for _ in range(5):
        with serving("--bind", "127.0.0.1:0", "plainapp:app", cwd=app_dir) as server:
            assert server.stop() == 0
        assert any("shutting down gracefully" in line for line in server.output)


def test_a_second_signal_during_the_grace_period_exits_at_once(app_dir: Path) -> None:
    args = ("--bind", "127.0.0.1:0", "--graceful-timeout", "30", "plainapp:app")
    with serving(*args, cwd=app_dir) as server:
        in_flight = BackgroundGet(f"http://127.0.0.1:{server.port}/slow?30")
        server.wait_for("slow request started")
        server.proc.send_signal(signal.SIGTERM)
        server.wait_for("shutting down gracefully")
        signalled_at = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        assert server.wait_exit(timeout=SLACK * 3) != 0
        assert time.monotonic() - signalled_at < SLACK * 2
        assert isinstance(in_flight.join(), OSError)  # cut off, not answered
