"""Shared fixtures: a real triowsgi server on 127.0.0.1 and a raw-socket client."""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trustme

import triowsgi

StartServer = Callable[..., Awaitable[triowsgi.ServerHandle]]


def h11_build() -> str:
    """The h11 build triowsgi must parse with here, with its version: ``h11-mypyc`` when
    the ``speed`` extra made it importable (``nox -s tests_speed``), else ``h11``."""
    name = "h11-mypyc" if importlib.util.find_spec("h11_mypyc") is not None else "h11"
    return f"{name} {importlib.metadata.version(name)}"


def builds() -> str:
    """What the start-up debug line must say of the builds: :func:`h11_build`, and
    whether the request modules are compiled (hatch_build.py) where triowsgi is found."""
    spec = importlib.util.find_spec("triowsgi._wsgi")
    assert spec is not None and spec.origin is not None
    modules = "in plain Python" if spec.origin.endswith(".py") else "compiled"
    return f"{h11_build()}, request modules {modules}"


def _refuse_stale_compiled_modules() -> None:
    # A module compiled in place (`python hatch_build.py --inplace`) is imported instead
    # of its source: one older than its source would have these tests test old code.
    package = Path(triowsgi.__file__).parent
    if "site-packages" in package.parts:
        return  # an installed wheel: built from the sources it holds
    for compiled in package.glob("*.so"):
        source = package / f"{compiled.name.split('.')[0]}.py"
        if source.exists() and source.stat().st_mtime > compiled.stat().st_mtime:
            pytest.exit(
                f"{compiled.name} is older than {source.name}: run "
                "`python hatch_build.py --inplace` (or --clean)",
                returncode=2,
            )


_refuse_stale_compiled_modules()


@pytest.fixture
async def start_server(nursery: trio.Nursery) -> StartServer:
    """``await start_server(app, **options)`` serves ``app`` on 127.0.0.1, a free port,
    until the test ends; returns the server handle (``handle.port``)."""

    async def start(app: Any, **options: Any) -> triowsgi.ServerHandle:
        handle: triowsgi.ServerHandle = await nursery.start(
            functools.partial(triowsgi.serve, app, 0, "127.0.0.1", **options)
        )
        return handle

    return start


class RawClient:
    """A client that sends exactly the bytes a test gives it and reads what comes back."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = bytearray()

    @classmethod
    async def connect(cls, port: int) -> RawClient:
        return cls(await trio.open_tcp_stream("127.0.0.1", port))

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def _fill(self) -> bool:
        with trio.fail_after(10):
            try:
                data = await self.stream.receive_some(65536)
            except trio.BrokenResourceError:  # a reset counts as EOF for the tests
                data = b""
        self.buffer += data
        return bool(data)

    async def read_until(self, marker: bytes) -> bytes:
        """Everything up to and including ``marker``."""
        while marker not in self.buffer:
            if not await self._fill():
                raise EOFError(f"connection closed before {marker!r}: {bytes(self.buffer)!r}")
        end = self.buffer.index(marker) + len(marker)
        data = bytes(self.buffer[:end])
        del self.buffer[:end]
        return data

    async def read_exactly(self, n: int) -> bytes:
        while len(self.buffer) < n:
            if not await self._fill():
                raise EOFError(f"connection closed after {bytes(self.buffer)!r}")
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        return data

    async def read_to_eof(self) -> bytes:
        """Everything until the server closes the connection."""
        while await self._fill():
            pass
        data = bytes(self.buffer)
        self.buffer.clear()
        return data

    async def read_response(self) -> tuple[bytes, dict[bytes, bytes], bytes]:
        """One response: status line, lower-cased headers, body (Content-Length or
        chunked; close-delimited bodies need read_to_eof)."""
        head = await self.read_until(b"\r\n\r\n")
        status, *lines = head[:-4].split(b"\r\n")
        headers: dict[bytes, bytes] = {}
        for line in lines:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        if b"content-length" in headers:
            body = await self.read_exactly(int(headers[b"content-length"]))
        elif headers.get(b"transfer-encoding") == b"chunked":
            body = await self._read_chunked()
        else:
            body = b""
        return status, headers, body

    async def _read_chunked(self) -> bytes:
        body = bytearray()
        while True:
            size = int((await self.read_until(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await self.read_until(b"\r\n")
                return bytes(body)
            body += await self.read_exactly(size)
            await self.read_exactly(2)

    async def aclose(self) -> None:
        await self.stream.aclose()


@pytest.fixture
def raw_client() -> Callable[[int], Awaitable[RawClient]]:
    return RawClient.connect


class RecordingLog:
    """A ``log`` option that keeps every line (written from Trio and worker threads) and
    says when the server starts exiting."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.exiting = trio.Event()

    def info(self, message: str) -> None:
        self.lines.append(message)
        if "wsgi exiting" in message:
            self.exiting.set()

    debug = error = info

    def mentioning(self, text: str, *, traceback: bool = False) -> list[str]:
        """The lines containing ``text`` (and a traceback, if asked)."""
        return [
            line for line in self.lines if text in line and (not traceback or "Traceback" in line)
        ]


def hello_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """The smallest app: 200 with a fixed body."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"Hello, world!\n"]


# -- TLS: a CA made at test time, a server certificate for "localhost" --------------------


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="session")
def server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(context)
    return context


@pytest.fixture(scope="session")
def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()  # verifies the chain and the host name
    ca.configure_trust(context)
    return context


Connect = Callable[[int], Awaitable[RawClient]]


@pytest.fixture(params=["plain", "tls"])
def transport(
    request: pytest.FixtureRequest,
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
) -> tuple[dict[str, Any], Connect]:
    """Server options and a raw client's connect, for plain TCP and for TLS."""
    if request.param == "plain":
        return {}, RawClient.connect

    async def connect(port: int) -> RawClient:
        tcp = await trio.open_tcp_stream("127.0.0.1", port)
        stream = trio.SSLStream(tcp, client_context, server_hostname="localhost")
        with trio.fail_after(5):
            await stream.do_handshake()
        return RawClient(stream)  # type: ignore[arg-type]

    return {"ssl_context": server_context}, connect
