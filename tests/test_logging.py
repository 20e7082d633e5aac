"""Logging: where the lines go (the ``triowsgi.access`` / ``triowsgi.error`` loggers by
default, else the ``log`` option: a logger, or a file written a line at a time), the access
line (eventlet's format and fields, ``log_x_forwarded_for``), ``log_output=False``, and
which requests get an access line."""

from __future__ import annotations

import io
import logging
import os
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import trio
import trio.testing
from conftest import RawClient, StartServer, builds, hello_app
from test_server import reset

import triowsgi

# eventlet's default access line for a GET / from 127.0.0.1 answered 200 with 14 bytes.
ACCESS_LINE = re.compile(
    r'127\.0\.0\.1 - - \[\d\d/[A-Z][a-z]{2}/\d{4} \d\d:\d\d:\d\d\] "GET / HTTP/1\.1" '
    r"200 14 \d+\.\d{6}"
)


class ListHandler(logging.Handler):
    """Keeps every record it is given."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    @property
    def messages(self) -> list[str]:
        return [record.getMessage() for record in self.records]


@contextmanager
def collecting(name: str) -> Iterator[ListHandler]:
    """A ListHandler on the logger ``name``, at DEBUG, for the block only."""
    logger = logging.getLogger(name)
    handler, level = ListHandler(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


async def wait_until(predicate: Callable[[], bool]) -> None:
    """Let the server run until ``predicate()`` holds: the access line is written just
    after the response, so the client may have it first."""
    with trio.fail_after(5):
        while not predicate():
            await trio.testing.wait_all_tasks_blocked(cushion=0.01)


async def all_closed(server: triowsgi.ServerHandle) -> None:
    """Wait until the server has finished with every connection (and logged it)."""
    await wait_until(lambda: server.open_connections == 0)


async def get(port: int, *headers: str, path: str = "/", method: str = "GET") -> RawClient:
    """One request on a new connection, its response read; the client, still open."""
    client = await RawClient.connect(port)
    head = "".join(f"{h}\r\n" for h in headers)
    await client.send(f"{method} {path} HTTP/1.1\r\nHost: x\r\n{head}\r\n".encode())
    if method == "HEAD":  # Content-Length, but no body follows
        await client.read_until(b"\r\n\r\n")
    else:
        await client.read_response()
    return client


def failing_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    if environ["PATH_INFO"] == "/boom":
        raise RuntimeError("boom")
    return hello_app(environ, start_response)


def streaming_app(environ: dict[str, Any], start_response: Any) -> Any:
    """1000 body bytes in pieces, without Content-Length (sent chunked)."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return (b"x" * 250 for _ in range(4))


# -- without a log option: the stdlib loggers ---------------------------------------------


async def test_access_lines_go_to_the_triowsgi_access_logger(start_server: StartServer) -> None:
    with collecting("triowsgi.access") as access, collecting("triowsgi.error") as errors:
        server = await start_server(hello_app)
        await (await get(server.port)).aclose()
        await wait_until(lambda: len(access.records) == 1)
    [record] = access.records
    assert record.levelno == logging.INFO
    assert ACCESS_LINE.fullmatch(record.getMessage()), record.getMessage()
    # The startup lines are not access lines.
    assert errors.messages == [
        f"({os.getpid()}) wsgi starting up on http://127.0.0.1:{server.port}",
        f"({os.getpid()}) wsgi parsing HTTP with {builds()}",
    ]


async def test_app_tracebacks_go_to_the_triowsgi_error_logger(start_server: StartServer) -> None:
    with collecting("triowsgi.access") as access, collecting("triowsgi.error") as errors:
        server = await start_server(failing_app)
        await (await get(server.port, path="/boom")).aclose()
        await wait_until(lambda: len(access.records) == 1)
    failure = [r for r in errors.records if "error in the application" in r.getMessage()]
    assert len(failure) == 1
    assert failure[0].levelno == logging.ERROR
    assert "Traceback (most recent call last)" in failure[0].getMessage()
    assert "RuntimeError: boom" in failure[0].getMessage()
    assert '"GET /boom HTTP/1.1" 500 ' in access.messages[0]


async def test_without_logging_configured_lines_go_to_stderr(
    start_server: StartServer, capsys: pytest.CaptureFixture[str]
) -> None:
    # No handler anywhere above triowsgi.access/.error (propagation stops at "triowsgi"):
    # lines are written to stderr, as eventlet does, rather than dropped by logging.
    parent = logging.getLogger("triowsgi")
    parent.propagate = False
    try:
        server = await start_server(hello_app)  # where lines go is settled at start-up
    finally:
        parent.propagate = True
    stderr: list[str] = []

    def lines() -> int:
        stderr.append(capsys.readouterr().err)
        return "".join(stderr).count("\n")

    await (await get(server.port)).aclose()
    await wait_until(lambda: lines() == 2)
    startup, access = "".join(stderr).splitlines()
    assert startup.endswith(f"wsgi starting up on http://127.0.0.1:{server.port}")
    assert ACCESS_LINE.fullmatch(access), access


# -- log=<a logger> ------------------------------------------------------------------


async def test_a_logger_gets_access_lines_at_info(start_server: StartServer) -> None:
    with (
        collecting("test.triowsgi.site") as site,
        collecting("triowsgi.access") as default_access,
    ):
        server = await start_server(failing_app, log=logging.getLogger("test.triowsgi.site"))
        await (await get(server.port)).aclose()
        await (await get(server.port, path="/boom")).aclose()
        await wait_until(lambda: sum('"GET' in m for m in site.messages) == 2)
    startup, *rest = site.records
    assert (startup.levelno, startup.getMessage()) == (
        logging.INFO,
        f"({os.getpid()}) wsgi starting up on http://127.0.0.1:{server.port}",
    )
    access = [r for r in rest if '"GET' in r.getMessage()]
    assert [r.levelno for r in access] == [logging.INFO, logging.INFO]
    # The client has its response before the line is written: the two connections'
    # lines may come in either order.
    assert any(ACCESS_LINE.fullmatch(r.getMessage()) for r in access)
    assert [r.levelno for r in rest if "RuntimeError: boom" in r.getMessage()] == [logging.ERROR]
    assert default_access.records == []  # everything went to the given logger


async def test_a_logger_gets_debug_lines_at_debug(start_server: StartServer) -> None:
    # A logger filters by level itself, so debug lines are passed to it without debug=True.
    with collecting("test.triowsgi.site") as site:
        server = await start_server(hello_app, log=logging.getLogger("test.triowsgi.site"))
        client = await RawClient.connect(server.port)
        await client.send(b"NONSENSE\r\n\r\n")
        assert (await client.read_response())[0].startswith(b"HTTP/1.1 400 ")
        await client.aclose()
        await all_closed(server)
    [bad] = [r for r in site.records if "bad request" in r.getMessage()]
    assert bad.levelno == logging.DEBUG


async def test_a_debug_startup_line_names_the_builds(start_server: StartServer) -> None:
    # How an operator tells whether the speed extra is in use (docs/deploying.md): the
    # line names the build this process imported, on either install.
    with collecting("test.triowsgi.site") as site:
        await start_server(hello_app, log=logging.getLogger("test.triowsgi.site"))
    [line] = [r for r in site.records if "parsing HTTP" in r.getMessage()]
    assert line.levelno == logging.DEBUG
    assert line.getMessage() == f"({os.getpid()}) wsgi parsing HTTP with {builds()}"


# -- log=<a file> ----------------------------------------------------------------------


async def test_a_file_gets_one_line_per_write(start_server: StartServer) -> None:
    log = io.StringIO()
    server = await start_server(hello_app, log=log)
    await (await get(server.port)).aclose()
    await wait_until(lambda: log.getvalue().count("\n") == 2)
    text = log.getvalue()
    assert text.endswith("\n")
    startup, access = text.splitlines()
    assert startup == f"({os.getpid()}) wsgi starting up on http://127.0.0.1:{server.port}"
    assert ACCESS_LINE.fullmatch(access)


@pytest.mark.parametrize("debug", [False, True])
async def test_a_file_gets_debug_lines_only_with_debug(
    start_server: StartServer, debug: bool
) -> None:
    log = io.StringIO()
    server = await start_server(hello_app, log=log, debug=debug)
    client = await RawClient.connect(server.port)
    await client.send(b"NONSENSE\r\n\r\n")
    assert (await client.read_response())[0].startswith(b"HTTP/1.1 400 ")
    await client.aclose()
    await all_closed(server)
    assert ("bad request from 127.0.0.1:" in log.getvalue()) is debug
    assert log.getvalue().endswith("\n")


# -- the access line's fields ------------------------------------------------------------


async def test_log_format_fields(start_server: StartServer) -> None:
    log = io.StringIO()
    server = await start_server(
        hello_app,
        log=log,
        log_format="%(client_port)s|%(status_code)s|%(body_length)s|%(request_line)s",
    )
    client = await get(server.port, path="/a?b=c")
    client_port = client.stream.socket.getsockname()[1]
    await wait_until(lambda: log.getvalue().count("\n") == 2)
    await client.aclose()
    # The body is 14 bytes; the status line and headers are not counted.
    assert log.getvalue().splitlines()[1] == f"{client_port}|200|14|GET /a?b=c HTTP/1.1"


@pytest.mark.parametrize(
    ("app", "method", "body_length"),
    [
        (streaming_app, "GET", "1000"),  # chunk framing is not body
        (hello_app, "HEAD", "0"),  # no body is sent for HEAD
    ],
)
async def test_body_length_counts_body_bytes_sent(
    start_server: StartServer, app: Any, method: str, body_length: str
) -> None:
    log = io.StringIO()
    server = await start_server(app, log=log, log_format="%(status_code)s %(body_length)s")
    await (await get(server.port, method=method)).aclose()
    await wait_until(lambda: log.getvalue().count("\n") == 2)
    assert log.getvalue().splitlines()[1] == f"200 {body_length}"


async def test_a_500_of_the_servers_own_logs_the_body_it_sent(start_server: StartServer) -> None:
    log = io.StringIO()
    server = await start_server(failing_app, log=log, log_format="%(status_code)s %(body_length)s")
    client = await RawClient.connect(server.port)
    await client.send(b"GET /boom HTTP/1.1\r\nHost: x\r\n\r\n")
    status, _, body = await client.read_response()
    assert (status, body) == (
        b"HTTP/1.1 500 Internal Server Error",
        b"500 Internal Server Error\n",
    )
    await client.aclose()
    await all_closed(server)
    assert log.getvalue().splitlines()[-1] == f"500 {len(body)}"  # 26 bytes, not 0


class Holding:
    """An app that reads the body (``/read``) or holds its request until released;
    ``entered`` is set once it runs."""

    def __init__(self) -> None:
        self.entered = trio.Event()
        self.release = threading.Event()
        self.token = trio.lowlevel.current_trio_token()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        trio.from_thread.run_sync(self.entered.set, trio_token=self.token)
        if environ["PATH_INFO"] == "/read":
            environ["wsgi.input"].read()  # raises, and the app lets it through
        else:
            self.release.wait(10)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"done"]


@pytest.mark.parametrize(
    ("cut_off_by", "status"),
    [("the client going away", "499"), ("socket_timeout", "408"), ("shutdown", "503")],
)
async def test_a_request_cut_off_before_its_response_logs_why(
    nursery: trio.Nursery, cut_off_by: str, status: str
) -> None:
    app, log = Holding(), io.StringIO()
    scope = trio.CancelScope()
    stopped = trio.Event()

    async def run(task_status: trio.TaskStatus[triowsgi.ServerHandle]) -> None:
        with scope:
            await triowsgi.serve(
                app, 0, "127.0.0.1", log=log, log_format="%(status_code)s %(body_length)s",
                socket_timeout=0.5, graceful_timeout=0.2, task_status=task_status,
            )  # fmt: skip
        stopped.set()

    server: triowsgi.ServerHandle = await nursery.start(run)
    client = await RawClient.connect(server.port)
    path = "/hold" if cut_off_by == "shutdown" else "/read"
    await client.send(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab".encode())
    with trio.fail_after(5):
        await app.entered.wait()
    if cut_off_by == "the client going away":
        reset(client)  # a reset, not an end of the body (which is the client's 400)
        await client.aclose()
    elif cut_off_by == "shutdown":
        scope.cancel()  # the grace period ends with the app still running
    with trio.fail_after(5):
        while not (access := re.findall(r"^\d+ \d+$", log.getvalue(), re.M)):
            await trio.sleep(0.01)
    app.release.set()
    assert access == [f"{status} 0"]
    await client.aclose()


async def test_wall_seconds_and_date_time(start_server: StartServer) -> None:
    log = io.StringIO()
    server = await start_server(hello_app, log=log, log_format="%(wall_seconds)f %(date_time)s")
    await (await get(server.port)).aclose()
    await wait_until(lambda: log.getvalue().count("\n") == 2)
    seconds, date_time = log.getvalue().splitlines()[1].split(" ", 1)
    assert 0 <= float(seconds) < 5
    assert re.fullmatch(r"\d\d/[A-Z][a-z]{2}/\d{4} \d\d:\d\d:\d\d", date_time)


@pytest.mark.parametrize(
    ("option", "header", "client_ip"),
    [
        (True, "X-Forwarded-For: 1.2.3.4", "1.2.3.4,127.0.0.1"),
        (True, "X-Forwarded-For: 1.2.3.4, 5.6.7.8", "1.2.3.4,5.6.7.8,127.0.0.1"),
        (True, "X-Other: 1", "127.0.0.1"),
        (False, "X-Forwarded-For: 1.2.3.4", "127.0.0.1"),
    ],
)
async def test_log_x_forwarded_for(
    start_server: StartServer, option: bool, header: str, client_ip: str
) -> None:
    log = io.StringIO()
    server = await start_server(
        hello_app, log=log, log_x_forwarded_for=option, log_format="%(client_ip)s"
    )
    await (await get(server.port, header)).aclose()
    await wait_until(lambda: log.getvalue().count("\n") == 2)
    assert log.getvalue().splitlines()[1] == client_ip


# -- what is logged at all -------------------------------------------------------------


async def test_log_output_false_silences_a_logger_too(start_server: StartServer) -> None:
    with (
        collecting("test.triowsgi.site") as site,
        collecting("triowsgi.access") as access,
        collecting("triowsgi.error") as errors,
    ):
        given = await start_server(
            failing_app, log=logging.getLogger("test.triowsgi.site"), log_output=False
        )
        default = await start_server(failing_app, log_output=False)
        for server in (given, default):
            await (await get(server.port)).aclose()
            await (await get(server.port, path="/boom")).aclose()
            await all_closed(server)
            assert server.requests_served == 2
    assert site.records == access.records == errors.records == []


async def test_one_access_line_per_request_that_reached_the_app(
    start_server: StartServer,
) -> None:
    log = io.StringIO()
    server = await start_server(hello_app, log=log, log_format="%(request_line)s")
    client = await RawClient.connect(server.port)
    for path in ("/1", "/2", "/3"):  # keep-alive: one connection
        await client.send(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        await client.read_response()
    await client.aclose()
    await all_closed(server)
    assert log.getvalue().splitlines()[1:] == [f"GET /{n} HTTP/1.1" for n in (1, 2, 3)]


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"NONSENSE\r\n\r\n",  # 400
        b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",  # 501
        b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",  # 414
    ],
)
async def test_no_access_line_for_an_error_the_server_answered(
    start_server: StartServer, request_bytes: bytes
) -> None:
    log = io.StringIO()
    server = await start_server(hello_app, log=log)
    client = await RawClient.connect(server.port)
    await client.send(request_bytes)
    status, _, _ = await client.read_response()
    assert not status.startswith(b"HTTP/1.1 2")
    await client.aclose()
    await all_closed(server)
    assert server.requests_served == 0
    assert log.getvalue().splitlines()[1:] == []


def test_a_bad_log_format_fails_at_start() -> None:
    with pytest.raises(ValueError, match="log_format"):
        triowsgi.Config.from_options(log_format="%(no_such_field)s")
