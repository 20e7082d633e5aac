"""Property tests over generated request streams, and a bounded soak with random
disconnects.

Valid streams (random methods, targets, headers and bodies; Content-Length or chunked
framing; several requests pipelined; the bytes cut into writes at random points) must get
exactly one well-formed response per request, in order, each echoing its request.

Mutated streams (a few bytes of a valid stream flipped, inserted or deleted; then the
client half-closes) must get only well-formed responses, never more successful responses
than there were requests, never a 500, an error response only as the last one and with the
connection closed after it, and all of it before the client's deadline; the server then
serves a fresh client as before.

The hypothesis examples run against one real server per test, in a thread of its own with
its own Trio loop, so the tests use plain blocking sockets. ``HYPOTHESIS_PROFILE=long``
(``nox -s fuzz``) runs thousands of examples instead of CI's few dozen.
"""

from __future__ import annotations

import functools
import json
import os
import random
import socket
import threading
from collections.abc import Iterator
from typing import Any

import h11
import pytest
import trio
from conftest import RawClient, StartServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_hostile_clients import RecordingLog, Usage, assert_nothing_left, reset

import triowsgi

settings.register_profile(
    "ci",
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("long", parent=settings.get_profile("ci"), max_examples=3000)
PROFILE = settings.get_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# How long a client waits for the server before calling it a hang.
DEADLINE = 5.0


# -- the server under test ---------------------------------------------------------------


def echo_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """Everything the app saw of the request, as JSON."""
    body = environ["wsgi.input"].read()
    seen = {
        "method": environ["REQUEST_METHOD"],
        "target": environ["RAW_PATH_INFO"]
        + ("?" + environ["QUERY_STRING"] if "QUERY_STRING" in environ else ""),
        "headers": {k: v for k, v in environ.items() if k.startswith("HTTP_X_F_")},
        "body": body.decode("latin-1"),
    }
    start_response(
        "200 OK",
        [("Content-Type", "application/json"), ("X-Seq", environ.get("HTTP_X_SEQ", ""))],
    )
    return [json.dumps(seen, sort_keys=True).encode()]


class ThreadedServer:
    """``triowsgi.serve`` in a thread with its own Trio loop, for blocking clients."""

    def __init__(self, app: Any, **options: Any) -> None:
        self.log = RecordingLog()
        self._serve = functools.partial(
            triowsgi.serve, app, 0, "127.0.0.1", log=self.log, **options
        )
        self._ready = threading.Event()
        self._thread = threading.Thread(target=trio.run, args=(self._main,), daemon=True)

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        async with trio.open_nursery() as nursery:
            self._scope = nursery.cancel_scope
            self.handle: triowsgi.ServerHandle = await nursery.start(self._serve)
            self._ready.set()

    def __enter__(self) -> ThreadedServer:
        self._thread.start()
        assert self._ready.wait(10), "the server did not start"
        return self

    def __exit__(self, *exc_info: object) -> None:
        trio.from_thread.run_sync(self._scope.cancel, trio_token=self._token)
        self._thread.join(10)
        assert not self._thread.is_alive(), "the server did not stop"

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.handle.port), timeout=DEADLINE)
        sock.settimeout(DEADLINE)  # a recv that waits longer is a hang: the test fails
        return sock

    def assert_serves_a_fresh_client(self) -> None:
        with self.connect() as sock:
            sock.sendall(b"GET /fresh HTTP/1.1\r\nHost: x\r\nX-Seq: fresh\r\n\r\n")
            [response] = read_responses(sock, [b"GET"], expect_eof=False)
        assert response.status_code == 200
        assert response.seq == b"fresh"

    def assert_no_internal_errors(self) -> None:
        assert not [line for line in self.log.lines if "internal error" in line]
        assert not [line for line in self.log.lines if "error in the application" in line]


@pytest.fixture(scope="module")
def server() -> Iterator[ThreadedServer]:
    with ThreadedServer(echo_app) as running:
        yield running


# -- responses, as a client parses them ----------------------------------------------------


class Response:
    def __init__(self, head: h11.Response, body: bytes, closes: bool) -> None:
        self.status_code = head.status_code
        self.headers = dict(head.headers)
        self.seq = self.headers.get(b"x-seq")
        self.body = body
        self.closes = closes  # the response said the connection ends after it


def read_responses(
    sock: socket.socket, methods: list[bytes], *, expect_eof: bool
) -> list[Response]:
    """Read and parse one response per method, in order; with ``expect_eof``, read until
    the server closes and return only the responses that came."""
    responses: list[Response] = []
    leftover = b""
    for method in methods:
        client = h11.Connection(h11.CLIENT)
        client.send(h11.Request(method=method, target="/", headers=[("Host", "x")]))
        client.send(h11.EndOfMessage())
        if leftover:  # (b"" would mean EOF to h11)
            client.receive_data(leftover)
        head: h11.Response | None = None
        body = bytearray()
        while True:
            event = client.next_event()  # raises on anything malformed: the test fails
            if event is h11.NEED_DATA:
                data = sock.recv(65536)
                if not data and expect_eof and head is None and not client.trailing_data[0]:
                    return responses  # closed between responses
                client.receive_data(data)
            elif isinstance(event, h11.Response):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
            else:
                raise AssertionError(f"unexpected {event!r} after {len(responses)} responses")
        assert head is not None
        responses.append(Response(head, bytes(body), client.their_state is h11.MUST_CLOSE))
        leftover = client.trailing_data[0]
    assert not leftover, f"bytes after the last response: {leftover!r}"
    if expect_eof:
        assert sock.recv(65536) == b"", "more than one response per request"
    return responses


# -- generated requests --------------------------------------------------------------------

TOKEN = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=8)
VALUE = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=0, max_size=20
).map(str.strip)
PATH = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~/", max_size=30)
# Letters only: no body can ever look like a request head or a chunk-size line.
BODY = st.text("abcdefghijklmnopqrstuvwxyz", max_size=300).map(str.encode)


@st.composite
def requests(draw: st.DrawFn, seq: int, methods: list[str]) -> dict[str, Any]:
    method = draw(st.sampled_from(methods))
    target = "/" + draw(PATH)
    if draw(st.booleans()):
        target += "?" + draw(PATH)
    headers = draw(st.dictionaries(TOKEN, VALUE, max_size=5))
    body = b"" if method == "HEAD" else draw(BODY)
    chunked = draw(st.booleans())
    pieces = [body]
    if chunked and body:
        cuts = sorted(draw(st.sets(st.integers(1, len(body)), max_size=4)))
        pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    return {
        "seq": str(seq),
        "method": method,
        "target": target,
        "headers": {f"HTTP_X_F_{k.upper()}": v for k, v in headers.items()},
        "body": body,
        "framing": "chunked" if chunked else "length",
        "pieces": pieces,
    }


def serialise(request: dict[str, Any]) -> bytes:
    """The request as an h11 client writes it."""
    headers = [("Host", "x"), ("X-Seq", request["seq"])]
    headers += [("X-F-" + k[9:].lower(), v) for k, v in request["headers"].items()]
    if request["framing"] == "chunked":
        headers.append(("Transfer-Encoding", "chunked"))
    elif request["body"]:
        headers.append(("Content-Length", str(len(request["body"]))))
    writer = h11.Connection(h11.CLIENT)
    data = writer.send(
        h11.Request(method=request["method"], target=request["target"], headers=headers)
    )
    for piece in request["pieces"]:
        data += writer.send(h11.Data(data=piece)) if piece else b""
    return data + writer.send(h11.EndOfMessage())


@st.composite
def streams(draw: st.DrawFn, methods: list[str]) -> tuple[list[dict[str, Any]], list[bytes]]:
    """Requests pipelined into one byte stream, cut into writes at random points."""
    n = draw(st.integers(1, 6))
    reqs = [draw(requests(seq, methods)) for seq in range(n)]
    data = b"".join(map(serialise, reqs))
    cuts = sorted(draw(st.sets(st.integers(1, len(data) - 1), max_size=5)))
    writes = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    return reqs, writes


@st.composite
def mutations(draw: st.DrawFn, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["flip", "insert", "delete"]))
        at = draw(st.integers(0, max(len(out) - 1, 0)))
        if kind == "flip" and out:
            out[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "insert":
            out[at:at] = bytes([draw(st.integers(0, 255))])
        else:
            del out[at : at + draw(st.integers(1, 8))]
    return bytes(out)


def send_writes(sock: socket.socket, writes: list[bytes]) -> None:
    for piece in writes:
        try:
            sock.sendall(piece)
        except (BrokenPipeError, ConnectionResetError):
            return  # the server answered and closed: what it said is what counts


# -- properties ----------------------------------------------------------------------------


@settings(PROFILE)
@given(stream=streams(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]))
def test_valid_streams_get_one_echoing_response_per_request_in_order(
    server: ThreadedServer, stream: tuple[list[dict[str, Any]], list[bytes]]
) -> None:
    reqs, writes = stream
    with server.connect() as sock:
        send_writes(sock, writes)
        responses = read_responses(sock, [r["method"].encode() for r in reqs], expect_eof=False)
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(65536) == b"", "more than one response per request"
    for request, response in zip(reqs, responses, strict=True):
        assert response.status_code == 200
        assert response.seq == request["seq"].encode()
        assert not response.closes
        if request["method"] == "HEAD":
            assert response.body == b""
            continue
        assert json.loads(response.body) == {
            "method": request["method"],
            "target": request["target"],
            "headers": request["headers"],
            "body": request["body"].decode(),
        }
    server.assert_no_internal_errors()


@settings(PROFILE)
@given(data=st.data())
def test_mutated_streams_get_well_formed_answers_and_no_more(
    server: ThreadedServer, data: st.DataObject
) -> None:
    # No HEAD: a response is parsed as the answer to a GET, and HEAD's has no body.
    reqs, _ = data.draw(streams(["GET", "POST", "PUT", "DELETE"]))
    mutated = data.draw(mutations(b"".join(map(serialise, reqs))))
    with server.connect() as sock:
        send_writes(sock, [mutated])
        sock.shutdown(socket.SHUT_WR)  # so a server waiting for more bytes sees the end
        try:
            # One more than there were requests: bytes that lost their framing (a body
            # whose Content-Length was mutated away) earn a 400 of their own.
            responses = read_responses(sock, [b"GET"] * (len(reqs) + 1), expect_eof=True)
        except ConnectionResetError:
            responses = []  # a reset loses what was in flight; the server is checked below
    for n, response in enumerate(responses):
        assert (
            response.status_code == 200
            or 400 <= response.status_code < 500
            or (response.status_code in (501, 505))
        ), f"status {response.status_code}"
        if response.status_code != 200:
            assert response.closes, "an error response must close the connection"
            assert n == len(responses) - 1, "a response after an error response"
    assert sum(r.status_code == 200 for r in responses) <= len(reqs)
    server.assert_no_internal_errors()
    server.assert_serves_a_fresh_client()


# -- soak ----------------------------------------------------------------------------------


def soak_app(environ: dict[str, Any], start_response: Any) -> Any:
    if environ["PATH_INFO"] == "/big":
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return (b"b" * 16384 for _ in range(64))  # 1 MiB, streamed
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return [body]


async def test_soak_thousands_of_requests_with_random_disconnects_leave_nothing_behind(
    start_server: StartServer,
) -> None:
    connections, per_connection = 50, 60  # 3,000 requests
    log = RecordingLog()
    server = await start_server(soak_app, log=log, minimum_chunk_size=16384)
    warm = await RawClient.connect(server.port)
    await warm.send(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    await warm.read_to_eof()
    await warm.aclose()
    baseline = Usage.now()
    completed = 0

    async def client(seed: int) -> None:
        nonlocal completed
        rng = random.Random(seed)
        conn: RawClient | None = None
        for i in range(per_connection):
            if conn is None:
                conn = await RawClient.connect(server.port)
            action = rng.random()
            body = b"%d-%d" % (seed, i) * rng.randrange(1, 50)
            request = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)
            if action < 0.06:  # vanish mid-request: in the head or in the body
                await conn.send((request + body)[: rng.randrange(1, len(request) + len(body))])
            elif action < 0.12:  # vanish mid-response
                await conn.send(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
                await conn.read_exactly(rng.randrange(1, 200_000))
            else:
                await conn.send(request + body)
                status, _, echoed = await conn.read_response()
                assert (status, echoed) == (b"HTTP/1.1 200 OK", body)
                completed += 1
                if action > 0.95:  # a polite close
                    await conn.aclose()
                    conn = None
                continue
            if rng.random() < 0.5:
                reset(conn)
            else:
                await conn.aclose()
            conn = None
        if conn is not None:
            await conn.aclose()

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for seed in range(connections):
                nursery.start_soon(client, seed)
    await assert_nothing_left(server, baseline)
    assert completed > 0.8 * connections * per_connection
    assert server.requests_served >= completed
    assert not [line for line in log.lines if "internal error" in line]
