"""Signals (triowsgi/_signals.py): a program that is just a server stops as servers do.

``trio.run(triowsgi.serve, app, port)``, the blocking ``server()`` and the command line
handle SIGINT and SIGTERM: the first begins the graceful shutdown (requests in flight
finish), a second ends the grace period, and the program ends normally, exit status 0
and no traceback. ``serve()`` inside a larger Trio program leaves signals alone;
``handle_signals=`` decides instead. The servers run in real processes, and the tests
wait for their output lines, never for time to pass.
"""

from __future__ import annotations

import functools
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import trio
from conftest import RawClient, hello_app
from test_server import ProcessOutput

import triowsgi
from triowsgi._signals import owns_the_process

EXAMPLES = Path(__file__).parent.parent / "examples"
GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
STARTED = r"^\((\d+)\) wsgi starting up on http://127\.0\.0\.1:(\d+)\n"
READ_TIMEOUT = 10.0  # the longest a test waits on a child's output

# An app that holds its request until the test writes a line to the process's stdin.
HELD_APP = """
import signal, sys, trio, triowsgi

def app(environ, start_response):
    sys.stderr.write("in the app\\n")  # one write: the server's lines come from other threads
    sys.stdin.readline()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"finished after the signal"]

if sys.argv[1] == "default":
    # As in a terminal, even if this test run was started with SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
print("SIGINT ignored at start:", signal.getsignal(signal.SIGINT) == signal.SIG_IGN, flush=True)
"""
SERVE_SCRIPT = (
    HELD_APP
    + """
trio.run(triowsgi.serve, app, 0, "127.0.0.1")
print("serve returned", flush=True)
"""
)
BLOCKING_SERVER_SCRIPT = (
    HELD_APP
    + """
import socket
sock = socket.socket()
sock.bind(("127.0.0.1", 0))
sock.listen()
triowsgi.server(sock, app)
print("server returned", flush=True)
"""
)


class Script:
    """``python -c script sigint``, its SIGINT ignored from the start when ``sigint`` is
    "ignored", as for a program a shell starts in the background."""

    def __init__(self, process: trio.Process) -> None:
        assert process.stdin and process.stdout and process.stderr
        self.process = process
        self.stdin = process.stdin
        self.stdout = ProcessOutput(process.stdout)
        self.stderr = ProcessOutput(process.stderr)

    @classmethod
    async def start(cls, script: str, sigint: str = "default") -> Script:
        command = [sys.executable, "-c", script, sigint]
        if sigint == "ignored":
            command = ["/bin/sh", "-c", 'trap "" INT; exec "$0" "$@"', *command]
        pipe = subprocess.PIPE
        process = await trio.lowlevel.open_process(command, stdin=pipe, stdout=pipe, stderr=pipe)
        return cls(process)

    async def wait_started(self) -> int:
        """The port, once the server says it is up."""
        return int((await self.stderr.wait_for(STARTED))[2])

    async def exit_status(self) -> int:
        with trio.fail_after(10):
            return await self.process.wait()

    def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()


@pytest.fixture
async def scripts() -> Any:
    """Start scripts with ``await scripts(...)``; any left running are killed."""
    started: list[Script] = []

    async def start(script: str, sigint: str = "default") -> Script:
        started.append(await Script.start(script, sigint))
        return started[-1]

    yield start
    with trio.CancelScope(shield=True):
        for script in started:
            script.kill()
            await script.process.wait()


# -- trio.run(triowsgi.serve, ...): the headline call -----------------------------------


@pytest.mark.parametrize(
    ("signum", "sigint"),
    [(signal.SIGTERM, "default"), (signal.SIGINT, "default"), (signal.SIGINT, "ignored")],
    ids=["SIGTERM", "SIGINT", "SIGINT-ignored-at-start"],
)
async def test_a_signal_lets_the_request_in_flight_finish_then_serve_returns(
    scripts: Any, signum: signal.Signals, sigint: str
) -> None:
    server: Script = await scripts(SERVE_SCRIPT, sigint)
    ignored = await server.stdout.wait_for("^SIGINT ignored at start: (True|False)$")
    assert ignored[1] == str(sigint == "ignored")
    client = await RawClient.connect(await server.wait_started())
    await client.send(GET)
    await server.stderr.wait_for("in the app")

    server.process.send_signal(signum)
    await server.stderr.wait_for(rf"^\(\d+\) {signum.name}: shutting down gracefully$")
    await server.stderr.wait_for("wsgi exiting")
    await server.stdin.send_all(b"go\n")  # the app may finish now

    status, headers, body = await client.read_response()
    assert (status, body) == (b"HTTP/1.1 200 OK", b"finished after the signal")
    assert headers[b"connection"] == b"close"
    assert await server.exit_status() == 0
    assert "serve returned" in await server.stdout.read_to_eof()
    assert "Traceback" not in await server.stderr.read_to_eof()


async def test_a_second_signal_ends_the_grace_period_and_serve_returns(scripts: Any) -> None:
    server: Script = await scripts(SERVE_SCRIPT)
    client = await RawClient.connect(await server.wait_started())
    await client.send(GET)
    await server.stderr.wait_for("in the app")  # held until the test lets it go: never
    server.process.send_signal(signal.SIGTERM)
    await server.stderr.wait_for("wsgi exiting")
    server.process.send_signal(signal.SIGINT)
    await server.stderr.wait_for(r"SIGINT again: ending the grace period now$")

    assert await server.exit_status() == 0
    assert await client.read_to_eof() == b""  # cut off: no response at all
    assert "serve returned" in await server.stdout.read_to_eof()
    assert "Traceback" not in await server.stderr.read_to_eof()


async def test_handle_signals_false_leaves_sigterm_to_kill_the_process(scripts: Any) -> None:
    script = SERVE_SCRIPT.replace(
        'trio.run(triowsgi.serve, app, 0, "127.0.0.1")',
        'trio.run(lambda: triowsgi.serve(app, 0, "127.0.0.1", handle_signals=False))',
    )
    server: Script = await scripts(script)
    await server.wait_started()
    server.process.send_signal(signal.SIGTERM)
    assert await server.exit_status() == -signal.SIGTERM
    assert "wsgi exiting" not in await server.stderr.read_to_eof()


def test_the_example_stopped_with_ctrl_c_says_wsgi_exiting_and_nothing_after() -> None:
    # examples/hello.py as it is, on a free port rather than 8090 (which may be taken).
    source = (EXAMPLES / "hello.py").read_text()
    assert "trio.run(triowsgi.serve, app, 8090)" in source
    script = source.replace("app, 8090)", "app, 0)")
    script = "import signal\nsignal.signal(signal.SIGINT, signal.default_int_handler)\n" + script
    process = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # A server that never says it started must fail the test, not hang it: the
    # blocking readline() ends (at EOF) when this kills the process.
    watchdog = threading.Timer(READ_TIMEOUT, process.kill)
    watchdog.start()
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
        assert " wsgi starting up on http://" in line, line
        process.send_signal(signal.SIGINT)  # what Ctrl-C sends
        stdout, stderr = process.communicate(timeout=READ_TIMEOUT)
    finally:
        watchdog.cancel()
        process.kill()
        process.wait()
    assert process.returncode == 0
    assert stdout == ""
    lines = stderr.splitlines()
    assert re.fullmatch(r"\(\d+\) wsgi exiting", lines[-1]), stderr


# -- server(): eventlet's blocking call ---------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_blocking_server_shuts_down_gracefully_on_a_signal(
    scripts: Any, signum: signal.Signals
) -> None:
    server: Script = await scripts(BLOCKING_SERVER_SCRIPT)
    client = await RawClient.connect(await server.wait_started())
    await client.send(GET)
    await server.stderr.wait_for("in the app")
    server.process.send_signal(signum)
    await server.stderr.wait_for("wsgi exiting")
    await server.stdin.send_all(b"go\n")

    status, _, body = await client.read_response()
    assert (status, body) == (b"HTTP/1.1 200 OK", b"finished after the signal")
    assert await server.exit_status() == 0
    assert "server returned" in await server.stdout.read_to_eof()
    assert "Traceback" not in await server.stderr.read_to_eof()


# -- inside a larger Trio program: signals are left alone ---------------------------------

SHUTDOWN_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def handlers() -> dict[int, Any]:
    return {signum: signal.getsignal(signum) for signum in SHUTDOWN_SIGNALS}


async def test_serve_in_a_nursery_beside_another_task_leaves_signals_alone(
    nursery: trio.Nursery,
) -> None:
    before = handlers()

    async def another_task(task_status: trio.TaskStatus[None]) -> None:
        task_status.started()
        await trio.sleep_forever()

    await nursery.start(another_task)
    handle = await nursery.start(functools.partial(triowsgi.serve, hello_app, 0, "127.0.0.1"))
    client = await RawClient.connect(handle.port)
    await client.send(GET)
    assert (await client.read_response())[0] == b"HTTP/1.1 200 OK"
    assert handlers() == before  # while serving


async def test_handle_signals_true_catches_them_while_serving_only(
    nursery: trio.Nursery,
) -> None:
    before = handlers()
    scope = trio.CancelScope()
    stopped = trio.Event()

    async def run(task_status: trio.TaskStatus[triowsgi.ServerHandle]) -> None:
        with scope:
            await triowsgi.serve(
                hello_app, 0, "127.0.0.1", handle_signals=True, task_status=task_status
            )
        stopped.set()

    await nursery.start(run)
    during = handlers()
    scope.cancel()
    await stopped.wait()
    assert all(during[signum] != before[signum] for signum in SHUTDOWN_SIGNALS)
    assert handlers() == before


@pytest.mark.parametrize(
    ("where", "owns"),
    [
        ("the main task", True),
        ("the main task, its nursery running another task", False),
        ("a task in the main task's nursery", False),
        ("the main task of trio.run in another thread", False),
    ],
)
def test_owns_the_process_only_as_the_main_task_alone_on_the_main_thread(
    where: str, owns: bool
) -> None:
    async def alone() -> bool:
        return owns_the_process()

    async def beside_another_task() -> bool:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.sleep_forever)
            answer = owns_the_process()
            nursery.cancel_scope.cancel()
        return answer

    async def in_a_child_task() -> bool:
        answers: list[bool] = []

        async def child() -> None:
            answers.append(owns_the_process())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(child)
        return answers[0]

    def in_a_thread() -> bool:
        answers: list[bool] = []
        thread = threading.Thread(target=lambda: answers.append(trio.run(alone)))
        thread.start()
        thread.join()
        return answers[0]

    run = {
        "the main task": lambda: trio.run(alone),
        "the main task, its nursery running another task": lambda: trio.run(beside_another_task),
        "a task in the main task's nursery": lambda: trio.run(in_a_child_task),
        "the main task of trio.run in another thread": in_a_thread,
    }[where]
    assert run() is owns
