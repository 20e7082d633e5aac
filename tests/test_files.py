"""``environ["wsgi.file_wrapper"]`` (PEP 3333): an iterable of ``block_size`` pieces whose
``close()`` closes the file; returned unchanged on a plain socket, a regular file goes by
``os.sendfile`` from its current position, for the app's Content-Length or the rest of the
file, without a worker thread while the client reads; everywhere else it is read as any
iterable. ``close()`` is called in every case.

Every response is checked byte for byte (a hash of what arrived against the file's
range) over real sockets; the Django ``FileResponse`` path is in test_interop.py.
"""

from __future__ import annotations

import hashlib
import io
import os
import socket
import ssl
import threading
import wsgiref.util
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trustme
from conftest import RawClient, RecordingLog, StartServer

import triowsgi
from triowsgi import ClientDisconnected
from triowsgi._direct import DirectSocket
from triowsgi._files import FileSpan, FileWrapper, file_span

Environ = dict[str, Any]
MIB = 1 << 20
# More than the kernel's buffers hold between a server and a client whose receive
# buffer is small (net.ipv4.tcp_wmem's maximum is 4 MiB by default).
BIG_SIZE = 16 * MIB


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("files") / "big.bin"
    path.write_bytes(os.urandom(BIG_SIZE))
    return path


@pytest.fixture(scope="module")
def small_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("files") / "small.bin"
    path.write_bytes(os.urandom(100_000))  # goes whole in the app thread's one call
    return path


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def expected(path: Path, position: int = 0, length: int | None = None) -> str:
    data = path.read_bytes()[position:]
    return digest(data if length is None else data[:length])


class TrackedFile:
    """A real file (its descriptor works) that counts its reads and says when it is closed."""

    def __init__(self, path: Path, position: int = 0) -> None:
        self.file = open(path, "rb")  # noqa: SIM115 - closed by close(), which is the point
        self.file.seek(position)
        self.reads = 0
        self.closed = threading.Event()

    def fileno(self) -> int:
        return self.file.fileno()

    def tell(self) -> int:
        return self.file.tell()

    def read(self, size: int = -1) -> bytes:
        self.reads += 1
        return self.file.read(size)

    def close(self) -> None:
        self.file.close()
        self.closed.set()

    async def wait_closed(self) -> bool:
        # close() runs in a worker thread, possibly just after the client has its bytes.
        return await trio.to_thread.run_sync(self.closed.wait, 10)


class FileApp:
    """Serves ``path`` through ``wsgi.file_wrapper`` from ``position``, with the given
    Content-Length (None: the app sets none); keeps every file it opened."""

    def __init__(
        self,
        path: Path,
        *,
        position: int = 0,
        content_length: int | None = None,
        status: str = "200 OK",
    ) -> None:
        self.path = path
        self.position = position
        self.content_length = content_length
        self.status = status
        self.files: list[TrackedFile] = []
        self.called = threading.Event()

    def __call__(self, environ: Environ, start_response: Any) -> Iterable[bytes]:
        if environ["PATH_INFO"] == "/hello":
            start_response("200 OK", [("Content-Length", "5")])
            return [b"hello"]
        tracked = TrackedFile(self.path, self.position)
        self.files.append(tracked)
        headers = [("Content-Type", "application/octet-stream")]
        if self.content_length is not None:
            headers.append(("Content-Length", str(self.content_length)))
        start_response(self.status, headers)
        self.called.set()
        return environ["wsgi.file_wrapper"](tracked, 32 * 1024)

    async def all_closed(self) -> bool:
        return all([await tracked.wait_closed() for tracked in self.files])

    @property
    def reads(self) -> int:
        return sum(tracked.reads for tracked in self.files)


# -- the wrapper ------------------------------------------------------------------------


def test_the_wrapper_iterates_block_size_pieces_and_close_closes_the_file() -> None:
    source = io.BytesIO(b"a" * 10 + b"b" * 5)
    wrapper = FileWrapper(source, 10)
    assert list(wrapper) == [b"a" * 10, b"b" * 5]
    wrapper.close()
    assert source.closed


def test_a_file_like_without_close_is_fine() -> None:
    class Reader:
        def __init__(self) -> None:
            self.parts = [b"x", b""]

        def read(self, size: int) -> bytes:
            return self.parts.pop(0)

    wrapper = FileWrapper(Reader())
    assert wrapper.block_size == 8192  # PEP 3333's default
    assert list(wrapper) == [b"x"]
    wrapper.close()


def test_a_span_is_the_rest_of_a_regular_binary_file(small_file: Path) -> None:
    with open(small_file, "rb") as file:
        file.read(10)  # a buffered reader reads ahead: tell() is the position that counts
        span = file_span(FileWrapper(file))
        assert span == FileSpan(file.fileno(), 10, 100_000 - 10)
        assert len(span) == 100_000 - 10


def test_what_has_no_usable_descriptor_is_iterated(small_file: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    read, write = os.pipe()
    with (
        open(small_file, encoding="latin-1") as text,
        open(empty, "rb") as nothing,
        open(read, "rb") as pipe,
        open(write, "wb"),
        open(small_file, "rb") as at_end,
    ):
        at_end.seek(0, os.SEEK_END)
        for filelike in (io.BytesIO(b"data"), text, nothing, pipe, at_end):
            assert file_span(FileWrapper(filelike)) is None
        assert file_span(iter(FileWrapper(at_end))) is None  # not the wrapper itself


def test_sendfile_sends_what_the_socket_takes_and_refuses_once_closed(
    small_file: Path,
) -> None:
    server, client = socket.socketpair()
    server.setblocking(False)
    with server, client, open(small_file, "rb") as file:
        direct = DirectSocket(server.fileno())
        sent = direct.sendfile(file.fileno(), 5, 1000)
        assert sent == 1000
        assert client.recv(2000) == small_file.read_bytes()[5:1005]
        assert direct.sendfile(file.fileno(), 100_000, 10) == 0  # the file's end
        while direct.sendfile(file.fileno(), 0, 100_000) is not None:
            pass  # until the socket is full: then None, not an error
        direct.close()
        with pytest.raises(ClientDisconnected):
            direct.sendfile(file.fileno(), 0, 10)


def test_sendfile_to_a_vanished_peer_is_a_disconnect(small_file: Path) -> None:
    server, client = socket.socketpair()
    server.setblocking(False)
    client.close()
    with server, open(small_file, "rb") as file, pytest.raises(ClientDisconnected):
        DirectSocket(server.fileno()).sendfile(file.fileno(), 0, 10)


# -- plain sockets: sendfile ------------------------------------------------------------


@pytest.mark.parametrize("size_fixture", ["small_file", "big_file"])
@pytest.mark.parametrize("position", [0, 12_345])
@pytest.mark.parametrize("with_length", [True, False])
async def test_the_file_arrives_exactly_by_sendfile(
    start_server: StartServer,
    request: pytest.FixtureRequest,
    size_fixture: str,
    position: int,
    with_length: bool,
) -> None:
    path: Path = request.getfixturevalue(size_fixture)
    length = path.stat().st_size - position
    app = FileApp(path, position=position, content_length=length if with_length else None)
    handle = await start_server(app)
    async with httpx.AsyncClient() as client:  # one keep-alive connection, two downloads
        for _ in range(2):
            with trio.fail_after(20):
                response = await client.get(f"http://127.0.0.1:{handle.port}/")
            assert response.status_code == 200
            assert response.headers["content-length"] == str(length)
            assert "transfer-encoding" not in response.headers
            assert digest(response.content) == expected(path, position)
    assert handle.open_connections == 1
    assert await app.all_closed()
    assert app.reads == 0  # never copied through Python


async def test_a_content_length_shorter_than_the_file_sends_that_many_bytes(
    start_server: StartServer, big_file: Path
) -> None:
    app = FileApp(big_file, position=7, content_length=3 * MIB + 1)
    handle = await start_server(app)
    client = await RawClient.connect(handle.port)
    await client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
    status, _, body = await client.read_response()
    assert status == b"HTTP/1.1 200 OK"
    assert digest(body) == expected(big_file, 7, 3 * MIB + 1)
    assert (await client.read_response())[2] == b"hello"  # the framing held
    await client.aclose()
    assert await app.all_closed()


@pytest.mark.parametrize(("method", "status"), [("HEAD", "200 OK"), ("GET", "304 Not Modified")])
async def test_no_body_for_head_and_304_and_the_connection_goes_on(
    start_server: StartServer, big_file: Path, method: str, status: str
) -> None:
    app = FileApp(big_file, position=100, status=status)
    handle = await start_server(app)
    client = await RawClient.connect(handle.port)
    request = f"{method} / HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    await client.send(request + b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
    head = await client.read_until(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status}\r\n".encode())
    if method == "HEAD":  # the length a GET would have (RFC 9110 §9.3.2)
        assert f"Content-Length: {BIG_SIZE - 100}\r\n".encode() in head
    assert (await client.read_response())[2] == b"hello"  # nothing came in between
    await client.aclose()
    assert await app.all_closed()


async def test_an_http10_client_gets_the_file_and_a_close(
    start_server: StartServer, big_file: Path
) -> None:
    app = FileApp(big_file)
    handle = await start_server(app)
    client = await RawClient.connect(handle.port)
    await client.send(b"GET / HTTP/1.0\r\n\r\n")
    _, headers, body = await client.read_response()
    assert headers[b"connection"] == b"close"
    assert digest(body) == expected(big_file)
    assert await client.read_to_eof() == b""
    await client.aclose()
    assert await app.all_closed()


# -- a slow client holds no thread --------------------------------------------------------


async def connect_with_small_buffer(port: int) -> RawClient:
    sock = trio.socket.socket()
    # A fixed receive buffer (no autotuning): most of the file stays in the server's file,
    # not in the kernel, until this client reads.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    await sock.connect(("127.0.0.1", port))
    return RawClient(trio.SocketStream(sock))


async def test_a_client_that_has_not_read_yet_holds_no_thread(
    start_server: StartServer, big_file: Path
) -> None:
    app = FileApp(big_file)
    handle = await start_server(app, threads=1)
    slow = await connect_with_small_buffer(handle.port)
    await slow.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    head = await slow.read_until(b"\r\n\r\n")  # the transfer has begun; now stop reading
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    other = await RawClient.connect(handle.port)
    await other.send(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
    with trio.fail_after(10):  # with the only thread held, this would never come
        assert (await other.read_response())[2] == b"hello"
    assert not app.files[0].closed.is_set()  # the download is still under way
    assert app.reads == 0
    body = await slow.read_exactly(BIG_SIZE)
    assert digest(body) == expected(big_file)
    assert await app.all_closed()
    await other.aclose()
    await slow.aclose()


class TimeoutLog(RecordingLog):
    def __init__(self) -> None:
        super().__init__()
        self.timed_out = trio.Event()

    def info(self, message: str) -> None:
        super().info(message)
        if "timed out" in message:
            self.timed_out.set()

    debug = error = info


@pytest.mark.parametrize("limit", ["socket_timeout", "send_timeout"])
async def test_a_client_that_stops_reading_is_dropped_at_the_write_limits(
    start_server: StartServer, big_file: Path, limit: str
) -> None:
    log = TimeoutLog()
    app = FileApp(big_file)
    handle = await start_server(app, log=log, **{limit: 0.5})
    stuck = await connect_with_small_buffer(handle.port)
    await stuck.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    with trio.fail_after(10):
        await log.timed_out.wait()
    assert await app.all_closed()
    received = await stuck.read_to_eof()
    assert len(received) < BIG_SIZE  # cut short, then closed
    await stuck.aclose()


async def test_a_client_that_goes_away_mid_file_costs_nothing_more(
    start_server: StartServer, big_file: Path
) -> None:
    app = FileApp(big_file)
    log = RecordingLog()
    handle = await start_server(app, log=log)
    gone = await connect_with_small_buffer(handle.port)
    await gone.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    await gone.read_until(b"\r\n\r\n")
    gone.stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
    await gone.aclose()  # a reset
    assert await app.all_closed()
    assert not log.mentioning("Traceback")
    client = await RawClient.connect(handle.port)
    await client.send(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await client.read_response())[2] == b"hello"
    await client.aclose()


async def test_a_download_cut_short_by_shutdown_closes_the_file(
    nursery: trio.Nursery, big_file: Path
) -> None:
    app = FileApp(big_file)
    scope = trio.CancelScope()

    async def run(task_status: trio.TaskStatus[triowsgi.ServerHandle]) -> None:
        with scope:
            await triowsgi.serve(
                app, 0, "127.0.0.1", graceful_timeout=0.2, log=RecordingLog(),
                task_status=task_status,
            )  # fmt: skip

    handle = await nursery.start(run)
    stuck = await connect_with_small_buffer(handle.port)
    await stuck.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    await stuck.read_until(b"\r\n\r\n")
    scope.cancel()  # the grace period ends with the client still not reading
    assert await app.all_closed()
    assert len(await stuck.read_to_eof()) < BIG_SIZE
    await stuck.aclose()


# -- a file shorter than its Content-Length ------------------------------------------------


@pytest.mark.parametrize(
    ("position", "content_length"),
    [
        (BIG_SIZE - 1000, 5000),
        (BIG_SIZE - 2 * MIB, 3 * MIB),
    ],
)
async def test_a_file_shorter_than_its_content_length_is_an_app_error(
    start_server: StartServer, big_file: Path, position: int, content_length: int
) -> None:
    log = RecordingLog()
    app = FileApp(big_file, position=position, content_length=content_length)
    handle = await start_server(app, log=log)
    client = await RawClient.connect(handle.port)
    await client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    head = await client.read_until(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    body = await client.read_to_eof()  # the connection closes: the body is cut short
    assert body == big_file.read_bytes()[position:]
    assert len(body) < content_length
    await client.aclose()
    assert await app.all_closed()
    [line] = log.mentioning("FileEndedEarly", traceback=True)
    assert "short of the response's Content-Length" in line


async def test_a_file_with_nothing_left_and_a_content_length_gets_a_500(
    start_server: StartServer, big_file: Path
) -> None:
    # Nothing to send by sendfile: iterated, it ends before the head is out, and the
    # client can still be told.
    log = RecordingLog()
    app = FileApp(big_file, position=BIG_SIZE, content_length=10)
    handle = await start_server(app, log=log)
    client = await RawClient.connect(handle.port)
    await client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    status, _, _ = await client.read_response()
    assert status == b"HTTP/1.1 500 Internal Server Error"
    await client.aclose()
    assert await app.all_closed()
    assert log.mentioning("Too little data", traceback=True)


# -- the iterable path ---------------------------------------------------------------------


def iterating_middleware(app: Any) -> Any:
    """Middleware that iterates what the app returns (and closes it, as PEP 3333 asks)."""

    def middleware(environ: Environ, start_response: Any) -> Iterator[bytes]:
        result = app(environ, start_response)
        try:
            yield from result
        finally:
            result.close()

    return middleware


@pytest.mark.parametrize("with_length", [True, False])
async def test_middleware_that_iterates_the_wrapper_gets_every_piece(
    start_server: StartServer, big_file: Path, with_length: bool
) -> None:
    length = BIG_SIZE - 999
    app = FileApp(big_file, position=999, content_length=length if with_length else None)
    handle = await start_server(iterating_middleware(app))
    async with httpx.AsyncClient() as client:
        with trio.fail_after(20):
            response = await client.get(f"http://127.0.0.1:{handle.port}/")
    assert digest(response.content) == expected(big_file, 999)
    assert app.reads > 0  # read in pieces, as any iterable
    assert await app.all_closed()


@pytest.fixture(scope="module")
def tls_contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


@pytest.mark.parametrize("with_length", [True, False])
async def test_over_tls_the_file_is_read_and_arrives_exactly(
    start_server: StartServer,
    big_file: Path,
    tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext],
    with_length: bool,
) -> None:
    server_context, client_context = tls_contexts
    length = BIG_SIZE - 4321
    app = FileApp(big_file, position=4321, content_length=length if with_length else None)
    handle = await start_server(app, ssl_context=server_context)
    async with httpx.AsyncClient(verify=client_context) as client:
        with trio.fail_after(30):
            response = await client.get(f"https://127.0.0.1:{handle.port}/")
    assert response.status_code == 200
    assert digest(response.content) == expected(big_file, 4321)
    assert app.reads > 0  # no sendfile through TLS
    assert await app.all_closed()


async def test_a_file_without_a_descriptor_is_iterated(start_server: StartServer) -> None:
    closed = threading.Event()

    class Buffer(io.BytesIO):
        def close(self) -> None:
            closed.set()
            super().close()

    data = os.urandom(300_000)

    def app(environ: Environ, start_response: Any) -> Any:
        start_response("200 OK", [])
        return environ["wsgi.file_wrapper"](Buffer(data))

    handle = await start_server(app)
    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{handle.port}/")
    assert response.content == data
    assert await trio.to_thread.run_sync(closed.wait, 10)


async def test_the_environ_option_may_replace_the_wrapper_to_turn_sendfile_off(
    start_server: StartServer, big_file: Path
) -> None:
    app = FileApp(big_file, position=5)
    handle = await start_server(app, environ={"wsgi.file_wrapper": wsgiref.util.FileWrapper})
    async with httpx.AsyncClient() as client:
        with trio.fail_after(20):
            response = await client.get(f"http://127.0.0.1:{handle.port}/")
    assert digest(response.content) == expected(big_file, 5)
    assert app.reads > 0
    assert await app.all_closed()
