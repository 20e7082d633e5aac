"""Behind a real nginx, configured as docs/deploying.md says: what the app sees of the client
through the proxy headers, keep-alive between nginx and triowsgi, a chunked upload and a
streamed download through the proxy, and TLS terminated at nginx.

nginx comes from the Debian package; when absent, the session fixture installs it with
apt-get (as root, with apt available), and otherwise skips these tests, saying why.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing
import trustme
from conftest import RawClient, StartServer

import triowsgi

# Seconds for each apt-get step: a slow mirror must not hang CI, but nginx-light is small.
APT_TIMEOUT = 300
# nginx starts in well under a second; polling its port longer than this means it won't.
READY_SECONDS = 10
STOP_SECONDS = 5
PACKAGES = ("nginx-light", "nginx")  # light is enough; bookworm has both, later only nginx

SEEN_KEYS = (
    "REMOTE_ADDR",
    "REMOTE_PORT",
    "HTTP_HOST",
    "HTTP_X_FORWARDED_FOR",
    "wsgi.url_scheme",
    "HTTPS",
    "CONTENT_LENGTH",
    "HTTP_TRANSFER_ENCODING",
)

# The server block of docs/deploying.md, plus test paths: everything under the prefix,
# one worker (so upstream keep-alive is observable), and a location without buffering.
NGINX_CONF = """
@USER@
worker_processes 1;
pid @PREFIX@/nginx.pid;
error_log @PREFIX@/error.log info;
events { worker_connections 64; }
http {
    access_log @PREFIX@/access.log;
    client_body_temp_path @PREFIX@/client_body;
    proxy_temp_path @PREFIX@/proxy;
    fastcgi_temp_path @PREFIX@/fastcgi;
    uwsgi_temp_path @PREFIX@/uwsgi;
    scgi_temp_path @PREFIX@/scgi;
    default_type application/octet-stream;

    upstream triowsgi {
        server 127.0.0.1:@UPSTREAM_PORT@;
        keepalive 8;
    }
    server {
        listen 127.0.0.1:@PORT@;
        @TLS_LISTEN@
        client_max_body_size 100m;
        location / {
            proxy_pass http://triowsgi;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
        }
        location /unbuffered/ {
            proxy_pass http://triowsgi;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_request_buffering off;
            proxy_buffering off;
        }
    }
}
"""


# -- getting nginx -----------------------------------------------------------------------


def find_nginx() -> str | None:
    # /usr/sbin is not on every PATH (a non-login root shell, a CI runner).
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    return found


def install_nginx() -> str:
    """Install nginx with apt-get; returns why it could not ('' when it could)."""
    if os.geteuid() != 0:
        return "nginx is not installed and installing it needs root"
    if shutil.which("apt-get") is None:
        return "nginx is not installed and there is no apt-get to install it"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    why = ""
    try:
        # A failed update may still leave usable lists behind: try the install anyway.
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, timeout=APT_TIMEOUT)
        for package in PACKAGES:
            done = subprocess.run(
                ["apt-get", "install", "-y", "--no-install-recommends", package],
                env=env,
                capture_output=True,
                text=True,
                timeout=APT_TIMEOUT,
            )
            if done.returncode == 0:
                return ""
            why = f"apt-get install {package} failed: {done.stderr.strip()[-300:]}"
    except (subprocess.SubprocessError, OSError) as exc:
        why = f"installing nginx failed: {exc}"
    return why


@pytest.fixture(scope="session")
def nginx_binary() -> str:
    """The nginx executable, installed by apt-get when absent (or the test is skipped)."""
    binary = find_nginx()
    if binary is None:
        why = install_nginx()
        binary = find_nginx()
        if binary is None:
            pytest.skip(why or "nginx could not be installed")
    return binary


# -- running nginx ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def nginx_conf(
    prefix: Path, port: int, upstream_port: int, tls: tuple[int, trustme.LeafCert] | None
) -> str:
    tls_listen = ""
    if tls is not None:
        tls_port, cert = tls
        cert.cert_chain_pems[0].write_to_path(prefix / "cert.pem")
        cert.private_key_pem.write_to_path(prefix / "key.pem")
        tls_listen = (
            f"listen 127.0.0.1:{tls_port} ssl; "
            f"ssl_certificate {prefix}/cert.pem; ssl_certificate_key {prefix}/key.pem;"
        )
    # As root, the master starts its worker as "nobody", which could not use the
    # temporary directories under pytest's root-only tmp_path.
    user = "user root;" if os.geteuid() == 0 else ""
    replacements = {
        "@USER@": user,
        "@PREFIX@": str(prefix),
        "@PORT@": str(port),
        "@UPSTREAM_PORT@": str(upstream_port),
        "@TLS_LISTEN@": tls_listen,
    }
    conf = NGINX_CONF
    for placeholder, value in replacements.items():
        conf = conf.replace(placeholder, value)
    return conf


async def wait_for_port(port: int, process: trio.Process, error_log: Path) -> None:
    """Connect until nginx accepts (bounded); fail with its error log if it exits."""
    with trio.fail_after(READY_SECONDS):
        while True:
            if process.returncode is not None or process.poll() is not None:
                log = error_log.read_text() if error_log.exists() else ""
                pytest.fail(f"nginx exited with {process.returncode}:\n{log}")
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
            except OSError:
                await trio.sleep(0.02)  # a poll: nginx is another process, nothing to await
                continue
            await stream.aclose()
            return


@asynccontextmanager
async def running_nginx(
    binary: str, prefix: Path, upstream_port: int, tls: trustme.LeafCert | None = None
) -> AsyncIterator[tuple[int, int | None]]:
    """nginx in the foreground in front of 127.0.0.1:``upstream_port``; yields its plain
    HTTP port and its TLS port (with ``tls``). Stopped by its PID when the block ends."""
    port = free_port()
    tls_port = free_port()
    conf = nginx_conf(prefix, port, upstream_port, None if tls is None else (tls_port, tls))
    (prefix / "nginx.conf").write_text(conf)
    error_log = prefix / "error.log"
    with (prefix / "stderr.log").open("wb") as stderr:
        process = await trio.lowlevel.open_process(
            # -e: the error log before the config is read (else /var/log/nginx/error.log).
            [
                binary,
                "-p",
                f"{prefix}/",
                "-c",
                f"{prefix}/nginx.conf",
                "-e",
                str(error_log),
                "-g",
                "daemon off;",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        await wait_for_port(port, process, error_log)
        if tls is not None:
            await wait_for_port(tls_port, process, error_log)
        yield port, None if tls is None else tls_port
    finally:
        with trio.CancelScope(shield=True):
            process.terminate()  # SIGTERM to the master's PID: a fast shutdown
            with trio.move_on_after(STOP_SECONDS):
                await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()


Behind = Callable[..., Awaitable[tuple[int, triowsgi.ServerHandle]]]


@pytest.fixture
async def behind_nginx(
    nginx_binary: str, start_server: StartServer, tmp_path: Path
) -> AsyncIterator[Behind]:
    """``await behind_nginx(app, **options)`` serves ``app`` with triowsgi, trusting
    127.0.0.1 as its proxy, behind nginx; returns nginx's port and the server handle."""
    async with trio.open_nursery() as nursery:
        stop = trio.Event()

        async def start(app: Any, **options: Any) -> tuple[int, triowsgi.ServerHandle]:
            handle = await start_server(app, forwarded_allow_ips="127.0.0.1", **options)
            port = await nursery.start(keep_nginx, handle.port)
            return port, handle

        async def keep_nginx(upstream_port: int, task_status: trio.TaskStatus[int]) -> None:
            async with running_nginx(nginx_binary, tmp_path, upstream_port) as (port, _):
                task_status.started(port)
                await stop.wait()

        yield start
        stop.set()


# -- apps ------------------------------------------------------------------------------


def seen_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """What the app sees of the request; for a body, its length and SHA-256."""
    body = environ["wsgi.input"].read()
    seen = {k: environ.get(k) for k in SEEN_KEYS}
    seen.update(body_length=len(body), body_sha256=hashlib.sha256(body).hexdigest())
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(seen).encode()]


async def get_seen(port: int, *headers: str, source: str | None = None) -> dict[str, Any]:
    """One GET to nginx, from ``source`` (an address on lo) if given; what the app saw."""
    stream = await trio.open_tcp_stream("127.0.0.1", port, local_address=source)
    client = RawClient(stream)
    head = "".join(f"{h}\r\n" for h in headers)
    await client.send(f"GET / HTTP/1.1\r\nHost: example.test\r\n{head}\r\n".encode())
    status, _, body = await client.read_response()
    await client.aclose()
    assert status == b"HTTP/1.1 200 OK", body
    result: dict[str, Any] = json.loads(body)
    return result


# -- what the app sees of the client ---------------------------------------------------


async def test_remote_addr_is_the_peer_nginx_saw(behind_nginx: Behind) -> None:
    port, _ = await behind_nginx(seen_app)
    seen = await get_seen(port)
    assert seen["HTTP_X_FORWARDED_FOR"] == "127.0.0.1"  # nginx's $remote_addr
    assert seen["REMOTE_ADDR"] == "127.0.0.1"
    # "0": the address came from X-Forwarded-For, not from nginx's socket.
    assert seen["REMOTE_PORT"] == "0"
    assert seen["HTTP_HOST"] == "example.test"  # proxy_set_header Host $host
    assert (seen["wsgi.url_scheme"], seen["HTTPS"]) == ("http", None)


async def test_a_client_on_a_trusted_address_can_name_its_own_address(
    behind_nginx: Behind,
) -> None:
    # nginx appends the peer it saw, so the chain is "198.51.100.9, 127.0.0.1". The
    # server trusts 127.0.0.1 as a proxy, and here the client itself is on 127.0.0.1:
    # its connection to nginx looks like one more proxy hop, so the hop left of it, the
    # client's own claim, is taken as the client. That is what trusting an address means;
    # it is harmless in production, where clients never connect from a trusted address
    # (the next test shows such a client's forged header being ignored).
    port, _ = await behind_nginx(seen_app)
    seen = await get_seen(port, "X-Forwarded-For: 198.51.100.9")
    assert seen["HTTP_X_FORWARDED_FOR"] == "198.51.100.9, 127.0.0.1"
    assert seen["REMOTE_ADDR"] == "198.51.100.9"


async def test_a_client_on_an_untrusted_address_cannot_forge_its_address(
    behind_nginx: Behind,
) -> None:
    # 127.0.0.2 is on the loopback interface too, but not in forwarded_allow_ips: like a
    # client on the internet, the hop nginx appends for it is the rightmost untrusted one.
    port, _ = await behind_nginx(seen_app)
    seen = await get_seen(port, "X-Forwarded-For: 198.51.100.9", source="127.0.0.2")
    assert seen["HTTP_X_FORWARDED_FOR"] == "198.51.100.9, 127.0.0.2"
    assert seen["REMOTE_ADDR"] == "127.0.0.2"


async def test_tls_terminated_at_nginx_is_https_to_the_app(
    nginx_binary: str, start_server: StartServer, tmp_path: Path
) -> None:
    ca = trustme.CA()
    handle = await start_server(seen_app, forwarded_allow_ips="127.0.0.1")
    leaf = ca.issue_cert("localhost")
    async with running_nginx(nginx_binary, tmp_path, handle.port, tls=leaf) as (_, tls_port):
        context = ssl.create_default_context()
        ca.configure_trust(context)
        async with httpx.AsyncClient(verify=context) as client:
            response = await client.get(f"https://localhost:{tls_port}/")
    seen = response.json()
    assert (seen["wsgi.url_scheme"], seen["HTTPS"]) == ("https", "on")
    assert seen["REMOTE_ADDR"] == "127.0.0.1"
    assert seen["HTTP_HOST"] == "localhost"


# -- keep-alive, uploads, downloads ------------------------------------------------------


async def test_nginx_reuses_one_upstream_connection(behind_nginx: Behind) -> None:
    log = LineLog()
    port, handle = await behind_nginx(
        seen_app, log=log, log_format="%(client_port)s %(status_code)s"
    )
    log.clear()  # the startup line
    for _ in range(5):  # five client connections, one after another
        assert (await get_seen(port))["REMOTE_ADDR"] == "127.0.0.1"
    with trio.fail_after(5):  # the access line is written just after the response
        while len(log) < 5:
            await trio.testing.wait_all_tasks_blocked(cushion=0.01)
    ports = {line.split()[0] for line in log}
    assert [line.split()[1] for line in log] == ["200"] * 5
    assert len(ports) == 1, log  # upstream keepalive: one connection served all five
    assert handle.open_connections == 1


class LineLog(list[str]):
    """A file-like ``log`` that keeps each line written."""

    def write(self, line: str) -> None:
        self.append(line)


def chunked(pieces: list[bytes]) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


@pytest.mark.parametrize(
    ("path", "upstream_framing"),
    [
        # nginx buffers the request body by default and sends it with Content-Length.
        ("/", "CONTENT_LENGTH"),
        # proxy_request_buffering off streams it on, chunked, over HTTP/1.1.
        ("/unbuffered/upload", "HTTP_TRANSFER_ENCODING"),
    ],
)
async def test_chunked_upload_through_nginx(
    behind_nginx: Behind, path: str, upstream_framing: str
) -> None:
    port, _ = await behind_nginx(seen_app)
    pieces = [os.urandom(n) for n in (1, 1000, 65536, 200_000, 7)]
    body = b"".join(pieces)
    client = await RawClient.connect(port)
    await client.send(
        f"POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        + chunked(pieces)
    )
    status, _, answer = await client.read_response()
    await client.aclose()
    seen = json.loads(answer)
    assert status == b"HTTP/1.1 200 OK"
    assert seen["body_length"] == len(body)
    assert seen["body_sha256"] == hashlib.sha256(body).hexdigest()
    framing = {"CONTENT_LENGTH": str(len(body)), "HTTP_TRANSFER_ENCODING": "chunked"}
    assert {k: seen[k] for k in framing} == {
        k: v if k == upstream_framing else None for k, v in framing.items()
    }


async def test_streamed_download_reaches_the_client_while_the_app_runs(
    behind_nginx: Behind,
) -> None:
    # The app holds its second piece until the client has the first: only a response
    # streamed end to end (triowsgi, then nginx with proxy_buffering off) can finish.
    client_has_first = threading.Event()
    first, second = b"a" * 65536 + b"<first>", b"b" * 65536 + b"<second>"

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        yield first
        if not client_has_first.wait(10):
            raise RuntimeError("the first piece never reached the client")
        yield second

    port, _ = await behind_nginx(app)
    received = b""
    url = f"http://127.0.0.1:{port}/unbuffered/stream"
    async with httpx.AsyncClient() as client, client.stream("GET", url) as response:
        async for data in response.aiter_bytes():
            received += data
            if received.endswith(b"<first>"):
                client_has_first.set()
    assert received == first + second


async def test_large_download_through_nginx(behind_nginx: Behind) -> None:
    piece = bytes(range(256)) * 256  # 64 KiB
    count = 80  # 5 MiB, more than nginx's memory buffers: its temp file is used too

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return (piece for _ in range(count))

    port, _ = await behind_nginx(app)
    digest = hashlib.sha256()
    total = 0
    url = f"http://127.0.0.1:{port}/big"
    async with httpx.AsyncClient() as client, client.stream("GET", url) as response:
        assert response.status_code == 200
        async for data in response.aiter_bytes():
            digest.update(data)
            total += len(data)
    assert total == len(piece) * count
    assert digest.hexdigest() == hashlib.sha256(piece * count).hexdigest()
