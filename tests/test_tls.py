"""TLS: ``serve(..., ssl_context=ctx)``, ``serve_listeners`` with a ``trio.SSLListener`` and
the blocking ``server()`` with an ssl-wrapped socket all serve https to a client that
verifies the certificate (made with trustme); the handshake runs in the connection's task,
bounded by ``socket_timeout``, and a client that botches it costs only its own connection.

Covered elsewhere: a reset mid-handshake leaves nothing behind, and a stalled handshake is
dropped at ``header_timeout`` (test_hostile_clients.py); the CLI's ``--certfile``
(test_cli.py).
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import signal
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trustme
from conftest import RawClient, RecordingLog, StartServer, hello_app

import triowsgi

GET = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"
OK = b"HTTP/1.1 200 OK"

Environ = dict[str, Any]


# conftest's CA and client context; here the certificate also names 127.0.0.1.
@pytest.fixture(scope="module")
def cert(ca: trustme.CA) -> trustme.LeafCert:
    return ca.issue_cert("localhost", "127.0.0.1")


@pytest.fixture(scope="module")
def server_context(cert: trustme.LeafCert) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    return context


def scheme_app(environ: Environ, start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "application/json")])
    seen = {"scheme": environ["wsgi.url_scheme"], "HTTPS": environ.get("HTTPS")}
    return [json.dumps(seen).encode()]


HTTPS_SEEN = {"scheme": "https", "HTTPS": "on"}


async def tls_connect(port: int, context: ssl.SSLContext) -> RawClient:
    stream = trio.SSLStream(
        await trio.open_tcp_stream("127.0.0.1", port),
        context,
        server_hostname="localhost",
        https_compatible=True,
    )
    with trio.fail_after(5):
        await stream.do_handshake()  # raises if the certificate does not verify
    return RawClient(stream)  # type: ignore[arg-type]


async def tls_get(client: RawClient) -> tuple[bytes, bytes]:
    await client.send(GET)
    with trio.fail_after(5):
        status, _, body = await client.read_response()
    return status, body


async def test_serve_with_an_ssl_context_serves_https_with_keep_alive(
    start_server: StartServer, server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    server = await start_server(scheme_app, ssl_context=server_context)
    client = await tls_connect(server.port, client_context)
    for _ in range(3):  # one TLS connection, three requests
        status, body = await tls_get(client)
        assert status == OK
        assert json.loads(body) == HTTPS_SEEN
    assert server.open_connections == 1
    assert server.requests_served == 3
    await client.aclose()


async def test_httpx_verifies_and_talks_to_the_tls_server(
    start_server: StartServer, server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    server = await start_server(scheme_app, ssl_context=server_context)
    async with httpx.AsyncClient(verify=client_context) as client:
        with trio.fail_after(10):
            response = await client.get(f"https://127.0.0.1:{server.port}/")
    assert response.status_code == 200
    assert response.json() == HTTPS_SEEN


async def test_a_client_that_does_not_trust_the_certificate_is_refused(
    start_server: StartServer, server_context: ssl.SSLContext
) -> None:
    server = await start_server(hello_app, ssl_context=server_context, log=RecordingLog())
    with pytest.raises(trio.BrokenResourceError) as info:
        await tls_connect(server.port, ssl.create_default_context())
    assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)


async def test_serve_listeners_with_an_ssl_listener(
    nursery: trio.Nursery, server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    (tcp,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    listener = trio.SSLListener(tcp, server_context, https_compatible=True)
    log = RecordingLog()
    handle = await nursery.start(
        functools.partial(triowsgi.serve_listeners, scheme_app, [listener], log=log)
    )
    assert any(f"wsgi starting up on https://127.0.0.1:{handle.port}" in x for x in log.lines)
    client = await tls_connect(handle.port, client_context)
    status, body = await tls_get(client)
    assert (status, json.loads(body)) == (OK, HTTPS_SEEN)
    await client.aclose()


async def test_the_handshake_is_bounded_by_socket_timeout(
    start_server: StartServer, server_context: ssl.SSLContext
) -> None:
    # header_timeout (20 s by default) would also end it, much later.
    server = await start_server(
        hello_app, ssl_context=server_context, socket_timeout=0.3, log=RecordingLog()
    )
    client = await RawClient.connect(server.port)  # connects, then sends nothing
    started = trio.current_time()
    with trio.fail_after(3):
        assert await client.read_to_eof() == b""
    assert trio.current_time() - started >= 0.25
    await client.aclose()


def client_hello(context: ssl.SSLContext) -> bytes:
    """The first flight of a real TLS handshake."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


async def test_bad_tls_clients_do_not_affect_a_good_one(
    start_server: StartServer, server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    log = RecordingLog()
    server = await start_server(scheme_app, ssl_context=server_context, log=log)
    good = await tls_connect(server.port, client_context)
    assert (await tls_get(good))[0] == OK

    plain = await RawClient.connect(server.port)  # plain HTTP to the TLS port
    await plain.send(GET)
    with trio.fail_after(5):
        answer = await plain.read_to_eof()
    assert not answer.startswith(b"HTTP/")  # at most a TLS alert, then the close
    await plain.aclose()

    hello = client_hello(client_context)
    dropped = await RawClient.connect(server.port)  # half a ClientHello, then gone
    await dropped.send(hello[: len(hello) // 2])
    await dropped.aclose()

    # The good client's connection was never disturbed, and new ones are served.
    status, body = await tls_get(good)
    assert (status, json.loads(body)) == (OK, HTTPS_SEEN)
    await good.aclose()
    another = await tls_connect(server.port, client_context)
    assert (await tls_get(another))[0] == OK
    await another.aclose()
    assert not [line for line in log.lines if "internal error" in line]


DOWNLOAD_PIECES = 256  # of 64 KiB: 16 MiB


def download_app(environ: Environ, start_response: Any) -> Iterator[bytes]:
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    for i in range(DOWNLOAD_PIECES):
        yield bytes([i % 251]) * 65536


def expected_download_digest() -> str:
    digest = hashlib.sha256()
    for i in range(DOWNLOAD_PIECES):
        digest.update(bytes([i % 251]) * 65536)
    return digest.hexdigest()


async def test_a_large_streamed_download_over_tls(
    start_server: StartServer, server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    server = await start_server(download_app, ssl_context=server_context)
    digest, size = hashlib.sha256(), 0
    async with httpx.AsyncClient(verify=client_context) as client:
        with trio.fail_after(15):
            async with client.stream("GET", f"https://127.0.0.1:{server.port}/") as response:
                assert response.headers["transfer-encoding"] == "chunked"
                async for piece in response.aiter_bytes():
                    digest.update(piece)
                    size += len(piece)
    assert size == DOWNLOAD_PIECES * 65536
    assert digest.hexdigest() == expected_download_digest()


BLOCKING_TLS_SERVER = """
import signal, socket, ssl, sys, triowsgi
signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal, even if a
# background parent left SIGINT ignored
context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
context.load_cert_chain(sys.argv[1])
sock = socket.socket()
sock.bind(("127.0.0.1", 0))
sock.listen()
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [environ["wsgi.url_scheme"].encode() + b" " + environ["HTTPS"].encode()]
# eventlet's way: eventlet.wrap_ssl(sock, server_side=True), an ssl-wrapped listening socket.
triowsgi.server(context.wrap_socket(sock, server_side=True), app)
"""


async def test_blocking_server_with_an_ssl_wrapped_socket_serves_https(
    tmp_path: Path, cert: trustme.LeafCert, client_context: ssl.SSLContext
) -> None:
    pem = tmp_path / "server.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(pem))
    process = await trio.lowlevel.open_process(
        [sys.executable, "-c", BLOCKING_TLS_SERVER, str(pem)], stderr=subprocess.PIPE
    )
    assert process.stderr is not None
    try:
        output = ""
        with trio.fail_after(30):
            while not (match := re.search(r"starting up on https://127\.0\.0\.1:(\d+)", output)):
                data = await process.stderr.receive_some()
                assert data, output
                output += data.decode()
        client = await tls_connect(int(match[1]), client_context)
        assert await tls_get(client) == (OK, b"https on")
        await client.aclose()
        process.send_signal(signal.SIGINT)  # Ctrl-C: server() returns
        with trio.fail_after(30):
            assert await process.wait() == 0
    finally:
        with trio.CancelScope(shield=True):
            process.kill()
            await process.wait()
