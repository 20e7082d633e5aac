"""Real clients (http.client, httpx, curl) and a real framework (Flask) against triowsgi,
and big transfers that must stream through in constant memory (the server's, measured in
a process of its own)."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import flask
import httpx
import pytest
import trio
from conftest import RawClient, StartServer, hello_app
from test_cli import TESTS_DIR, TIMEOUT, serving


def echo_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """Echoes the method, framing headers and body as JSON, plus the client's port (to
    tell whether a connection was reused)."""
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [
        json.dumps(
            {
                "method": environ["REQUEST_METHOD"],
                "path": environ["PATH_INFO"],
                "query": environ.get("QUERY_STRING"),
                "content_length": environ.get("CONTENT_LENGTH"),
                "transfer_encoding": environ.get("HTTP_TRANSFER_ENCODING"),
                "expect": environ.get("HTTP_EXPECT"),
                "body": body.decode("latin-1"),
                "remote_port": environ["REMOTE_PORT"],
            }
        ).encode()
    ]


def streaming_app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    for i in range(5):
        yield f"piece {i}\n".encode()


# -- http.client --------------------------------------------------------------------


def http_client_exchange(port: int, requests: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """Run ``requests`` on one HTTPConnection; status, headers and body of each."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    results = []
    try:
        for request in requests:
            conn.request(**request)
            response = conn.getresponse()
            results.append((response.status, dict(response.getheaders()), response.read()))
    finally:
        conn.close()
    return results


async def test_http_client_get(start_server: StartServer) -> None:
    server = await start_server(hello_app)
    [(status, headers, body)] = await trio.to_thread.run_sync(
        http_client_exchange, server.port, [{"method": "GET", "url": "/"}]
    )
    assert (status, body) == (200, b"Hello, world!\n")
    assert headers["Content-Length"] == "14"
    assert headers["Content-Type"] == "text/plain"
    assert "Date" in headers


async def test_http_client_post_with_body(start_server: StartServer) -> None:
    server = await start_server(echo_app)
    [(status, _, body)] = await trio.to_thread.run_sync(
        http_client_exchange,
        server.port,
        [{"method": "POST", "url": "/submit?x=1", "body": b"a=1&b=2"}],
    )
    echoed = json.loads(body)
    assert status == 200
    assert echoed["method"] == "POST"
    assert (echoed["path"], echoed["query"]) == ("/submit", "x=1")
    assert (echoed["content_length"], echoed["body"]) == ("7", "a=1&b=2")


async def test_http_client_reuses_one_connection(start_server: StartServer) -> None:
    server = await start_server(echo_app)
    requests = [
        {"method": "GET", "url": "/1"},
        {"method": "POST", "url": "/2", "body": b"x" * 1000},
        {"method": "GET", "url": "/3"},
    ]
    results = await trio.to_thread.run_sync(http_client_exchange, server.port, requests)
    echoed = [json.loads(body) for _, _, body in results]
    assert [e["path"] for e in echoed] == ["/1", "/2", "/3"]
    assert len({e["remote_port"] for e in echoed}) == 1  # one TCP connection for all
    assert server.requests_served == 3


async def test_http_client_chunked_upload(start_server: StartServer) -> None:
    server = await start_server(echo_app)
    request = {
        "method": "PUT",
        "url": "/upload",
        "body": iter([b"first,", b"second,", b"", b"third"]),
        "headers": {"Transfer-Encoding": "chunked"},
        "encode_chunked": True,
    }
    [(status, _, body)] = await trio.to_thread.run_sync(
        http_client_exchange, server.port, [request]
    )
    echoed = json.loads(body)
    assert status == 200
    assert echoed["transfer_encoding"] == "chunked"
    assert echoed["content_length"] is None
    assert echoed["body"] == "first,second,third"


# -- httpx --------------------------------------------------------------------------


async def test_httpx_get_and_post(start_server: StartServer) -> None:
    server = await start_server(echo_app)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
        got = await client.get("/path", params={"q": "a b"})
        posted = await client.post("/form", data={"name": "trio", "n": "3"})
    assert got.status_code == posted.status_code == 200
    assert got.http_version == "HTTP/1.1"
    assert got.json()["query"] == "q=a+b"
    assert posted.json()["body"] == "name=trio&n=3"
    # httpx keeps its connection alive between the two requests.
    assert got.json()["remote_port"] == posted.json()["remote_port"]


async def test_httpx_streaming_response(start_server: StartServer) -> None:
    server = await start_server(streaming_app, minimum_chunk_size=0)
    async with (
        httpx.AsyncClient() as client,
        client.stream("GET", f"http://127.0.0.1:{server.port}/") as response,
    ):
        assert response.headers["transfer-encoding"] == "chunked"
        text = "".join([piece async for piece in response.aiter_text()])
    assert text == "".join(f"piece {i}\n" for i in range(5))


def httpx_sync_upload(port: int) -> httpx.Response:
    def body() -> Iterator[bytes]:
        yield b"sync "
        yield b"client"

    with httpx.Client() as client:
        return client.post(f"http://127.0.0.1:{port}/gen", content=body())


async def test_httpx_sync_client_generator_upload(start_server: StartServer) -> None:
    server = await start_server(echo_app)
    response = await trio.to_thread.run_sync(httpx_sync_upload, server.port)
    assert response.status_code == 200
    assert response.json()["transfer_encoding"] == "chunked"
    assert response.json()["body"] == "sync client"


# -- curl ---------------------------------------------------------------------------

needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


async def curl(*args: str, stdin: bytes = b"") -> str:
    with trio.fail_after(10):
        result = await trio.run_process(
            ["curl", "-s", "-S", "--max-time", "10", *args],
            stdin=stdin,
            capture_stdout=True,
            capture_stderr=True,
        )
    return result.stdout.decode("latin-1")


@needs_curl
async def test_curl_get(start_server: StartServer) -> None:
    server = await start_server(hello_app)
    output = await curl("-i", f"http://127.0.0.1:{server.port}/")
    head, body = output.split("\r\n\r\n", 1)
    assert head.startswith("HTTP/1.1 200 OK\r\n")
    assert "Content-Length: 14\r\n" in head + "\r\n"
    assert body == "Hello, world!\n"


@needs_curl
async def test_curl_http10(start_server: StartServer) -> None:
    server = await start_server(streaming_app)
    output = await curl("-i", "--http1.0", f"http://127.0.0.1:{server.port}/")
    head, body = output.split("\r\n\r\n", 1)
    assert head.startswith("HTTP/1.1 200 OK\r\n")
    # No chunked encoding for an HTTP/1.0 client: the body ends when the connection does.
    assert "transfer-encoding" not in head.lower()
    assert body == "".join(f"piece {i}\n" for i in range(5))


@needs_curl
async def test_curl_upload_from_stdin(start_server: StartServer) -> None:
    server = await start_server(echo_app)
    output = await curl(
        "--data-binary", "@-", f"http://127.0.0.1:{server.port}/up", stdin=b"from\ncurl\n"
    )
    echoed = json.loads(output)
    assert echoed["method"] == "POST"
    assert echoed["body"] == "from\ncurl\n"


@needs_curl
async def test_curl_expect_100_continue(start_server: StartServer) -> None:
    server = await start_server(echo_app)
    body = b"y" * 4000
    output = await curl(
        "-i",
        "-H",
        "Expect: 100-continue",
        "--expect100-timeout",
        "5",  # long enough that only a real 100 Continue makes curl send the body quickly
        "--data-binary",
        "@-",
        f"http://127.0.0.1:{server.port}/big",
        stdin=body,
    )
    assert output.startswith("HTTP/1.1 100 Continue\r\n")
    final_head, response_body = output.split("\r\n\r\n", 1)[1].split("\r\n\r\n", 1)
    assert final_head.startswith("HTTP/1.1 200 OK")
    echoed = json.loads(response_body)
    assert echoed["expect"] == "100-continue"
    assert echoed["body"] == body.decode()


# -- Flask --------------------------------------------------------------------------


def make_flask_app() -> flask.Flask:
    app = flask.Flask("interop")

    @app.get("/hello/<name>")
    def hello(name: str) -> str:
        return f"Hello, {name}!"

    @app.get("/json")
    def as_json() -> flask.Response:
        return flask.jsonify(items=[1, 2, 3], args=flask.request.args.to_dict())

    @app.post("/form")
    def form() -> flask.Response:
        return flask.jsonify(dict(flask.request.form))

    @app.post("/data")
    def data() -> flask.Response:
        body = flask.request.get_data()
        return flask.jsonify(length=len(body), text=body.decode())

    @app.get("/stream")
    def stream() -> flask.Response:
        def generate() -> Iterator[str]:
            yield f"start {flask.request.args['n']}\n"
            for i in range(int(flask.request.args["n"])):
                yield f"line {i}\n"

        return flask.Response(flask.stream_with_context(generate()), mimetype="text/plain")

    return app


async def test_flask_app(start_server: StartServer) -> None:
    server = await start_server(make_flask_app())
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
        hello = await client.get("/hello/trio%20wsgi")
        assert (hello.status_code, hello.text) == (200, "Hello, trio wsgi!")

        as_json = await client.get("/json", params={"a": "b"})
        assert as_json.headers["content-type"] == "application/json"
        assert as_json.json() == {"items": [1, 2, 3], "args": {"a": "b"}}

        form = await client.post("/form", data={"user": "ann", "lang": "pé"})
        assert form.json() == {"user": "ann", "lang": "pé"}

        stream = await client.get("/stream", params={"n": "3"})
        assert stream.text == "start 3\nline 0\nline 1\nline 2\n"

        missing = await client.get("/nope")
        assert missing.status_code == 404
        assert "Not Found" in missing.text


async def test_flask_reads_a_chunked_upload(start_server: StartServer) -> None:
    # Only possible because triowsgi sets wsgi.input_terminated (eventlet doesn't).
    server = await start_server(make_flask_app())
    client = await RawClient.connect(server.port)
    await client.send(
        b"POST /data HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Type: application/octet-stream\r\n\r\n"
        b"5\r\nhello\r\n1;ext=1\r\n \r\n5\r\nworld\r\n0\r\n\r\n"
    )
    status, _, body = await client.read_response()
    assert status == b"HTTP/1.1 200 OK"
    assert json.loads(body) == {"length": 11, "text": "hello world"}


# -- big transfers ------------------------------------------------------------------

BIG = 50 * 1024 * 1024
MAX_RSS_GROWTH = 30 * 1024 * 1024
# The server runs in a process of its own, so that what is measured is its memory alone,
# as it is during the transfer (not a lifetime peak that earlier tests may have raised).
BIG_APP = """
import hashlib

BIG = 50 * 1024 * 1024
PIECE = b"0123456789abcdef" * 65536  # 1 MiB


def app(environ, start_response):
    if environ["REQUEST_METHOD"] != "POST":  # a download of BIG bytes, in pieces
        start_response("200 OK", [("Content-Length", str(BIG))])
        return (PIECE for _ in range(BIG // len(PIECE)))
    digest = hashlib.sha256()  # an upload: read in 64 KiB pieces, answer length and hash
    size = 0
    while piece := environ["wsgi.input"].read(65536):
        size += len(piece)
        digest.update(piece)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"{size} {digest.hexdigest()}".encode()]
"""
PIECE = b"0123456789abcdef" * 65536  # 1 MiB


def rss(pid: int, field: str = "VmRSS") -> int:
    """A process's resident set size now (or its peak, ``VmHWM``), in bytes."""
    status = Path(f"/proc/{pid}/status").read_text()
    (kib,) = re.findall(rf"^{field}:\s+(\d+) kB$", status, re.M)
    return int(kib) * 1024


class ServerMemory:
    """How far a process's resident memory rises above where it was at the start:
    sampled every few milliseconds, and its kernel-kept peak (``VmHWM``, reset at the
    start) where the kernel lets us reset it."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.baseline = rss(pid)
        try:
            Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM to VmRSS
            self.exact = True
        except OSError:
            self.exact = False
        self.peak = self.baseline
        self._done = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def _sample(self) -> None:
        while not self._done.wait(0.005):
            self.peak = max(self.peak, rss(self.pid))

    def growth(self) -> int:
        """Bytes above the start, at the highest (stops the sampling)."""
        self._done.set()
        self._sampler.join(TIMEOUT)
        if self.exact:
            self.peak = max(self.peak, rss(self.pid, "VmHWM"))
        return self.peak - self.baseline


@pytest.fixture
def big_server(tmp_path: Path) -> Iterator[Any]:
    """The CLI serving BIG_APP, warmed up by one small request."""
    if not Path("/proc/self/status").exists():
        pytest.skip("reads a process's memory from /proc")
    (tmp_path / "bigapp.py").write_text(BIG_APP)
    with serving("--bind", "127.0.0.1:0", "bigapp:app", cwd=tmp_path) as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=TIMEOUT)
        conn.request("POST", "/warm-up", body=b"x" * 65536)
        assert conn.getresponse().read().startswith(b"65536 ")
        conn.close()
        yield server
        assert server.stop() == 0


def test_50_mb_upload_streams_through(big_server: Any) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", big_server.port, timeout=TIMEOUT)
    expected = hashlib.sha256(PIECE * (BIG // len(PIECE))).hexdigest()
    memory = ServerMemory(big_server.proc.pid)
    conn.request(
        "POST",
        "/up",
        body=(PIECE for _ in range(BIG // len(PIECE))),
        headers={"Content-Length": str(BIG)},
    )
    response = conn.getresponse()
    assert response.status == 200
    assert response.read().decode() == f"{BIG} {expected}"
    assert memory.growth() < MAX_RSS_GROWTH
    conn.close()


def test_50_mb_download_streams_through(big_server: Any) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", big_server.port, timeout=TIMEOUT)
    memory = ServerMemory(big_server.proc.pid)
    conn.request("GET", "/down")
    response = conn.getresponse()
    assert response.status == 200
    assert response.headers["Content-Length"] == str(BIG)
    received = 0
    while data := response.read(1024 * 1024):
        received += len(data)
    assert received == BIG
    assert memory.growth() < MAX_RSS_GROWTH
    # The connection is still usable afterwards.
    conn.request("GET", "/down", headers={"Connection": "close"})
    assert conn.getresponse().status == 200
    conn.close()


# -- Django's FileResponse ----------------------------------------------------------


def test_django_file_response_goes_by_sendfile_through_the_cli(tmp_path: Path) -> None:
    # Django hands FileResponse's file to wsgi.file_wrapper, and its response's close()
    # to the file's close().
    data = os.urandom(5 * 1024 * 1024 + 3)
    (tmp_path / "download.bin").write_bytes(data)
    env = {
        "DJANGO_SETTINGS_MODULE": "djangoapp.settings",
        "TRIOWSGI_TEST_FILE": str(tmp_path / "download.bin"),
    }
    with serving(
        "--bind", "127.0.0.1:0", "djangoapp.wsgi:application", cwd=TESTS_DIR, env=env
    ) as server:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=TIMEOUT) as client:
            for _ in range(2):  # one keep-alive connection
                response = client.get("/download/")
                assert response.status_code == 200
                assert response.headers["content-length"] == str(len(data) - 10)
                assert (
                    hashlib.sha256(response.content).digest() == hashlib.sha256(data[10:]).digest()
                )
                server.wait_for("django request finished")
        assert server.stop() == 0
    assert not [line for line in server.output if "django file read" in line]
