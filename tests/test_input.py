"""``wsgi.input``: io-style reads of the request body that never go past its end.

:class:`Input` is driven here through its own contract, a blocking ``pull`` callable
returning the body piece by piece (``b""`` at the end), and end to end over sockets.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from conftest import RawClient

from triowsgi import ClientDisconnected
from triowsgi._input import Input

# --- Input with scripted pieces ------------------------------------------------------


class Pieces:
    """A ``pull`` that returns the given pieces, then ``b""`` (and counts its calls)."""

    def __init__(self, *pieces: bytes) -> None:
        self.pieces = list(pieces)
        self.calls = 0

    def __call__(self) -> bytes:
        self.calls += 1
        return self.pieces.pop(0) if self.pieces else b""


def make_input(*pieces: bytes) -> Input:
    return Input(Pieces(*pieces))


BODY_PIECES = (b"li", b"ne 1\nline", b" 2\n", b"\nlast")  # lines cross piece boundaries
LINES = [b"line 1\n", b"line 2\n", b"\n", b"last"]


def test_read_everything() -> None:
    for size in ((), (-1,), (None,), (-5,)):
        assert make_input(*BODY_PIECES).read(*size) == b"".join(LINES)


def test_read_n_returns_at_most_n_and_then_empty() -> None:
    wsgi_input = make_input(*BODY_PIECES)
    assert wsgi_input.read(4) == b"line"
    assert wsgi_input.read(0) == b""
    assert wsgi_input.read(10) == b" 1\nline 2\n"
    assert wsgi_input.read(100) == b"\nlast"
    assert wsgi_input.read(1) == b""
    assert wsgi_input.read() == b""


def test_readline() -> None:
    wsgi_input = make_input(*BODY_PIECES)
    assert [wsgi_input.readline() for _ in range(5)] == [*LINES, b""]


def test_readline_with_a_size() -> None:
    wsgi_input = make_input(*BODY_PIECES)
    assert wsgi_input.readline(3) == b"lin"
    assert wsgi_input.readline(100) == b"e 1\n"
    assert wsgi_input.readline(7) == b"line 2\n"  # exactly the line, newline included
    assert wsgi_input.readline(0) == b""
    assert wsgi_input.readline(None) == b"\n"
    assert wsgi_input.readline(-1) == b"last"


def test_readlines() -> None:
    assert make_input(*BODY_PIECES).readlines() == LINES
    assert make_input().readlines() == []  # eventlet returned b"" here


@pytest.mark.parametrize(
    ("hint", "expected"),
    [
        (1, LINES[:1]),
        (7, LINES[:1]),  # io: stop once the total reaches the hint
        (8, LINES[:2]),
        (15, LINES[:3]),
        (0, LINES),
        (-1, LINES),
        (None, LINES),
    ],
)
def test_readlines_with_a_hint(hint: int | None, expected: list[bytes]) -> None:
    wsgi_input = make_input(*BODY_PIECES)
    assert wsgi_input.readlines(hint) == expected
    assert wsgi_input.read() == b"".join(LINES[len(expected) :])


def test_iteration_is_line_by_line() -> None:
    wsgi_input = make_input(*BODY_PIECES)
    assert iter(wsgi_input) is wsgi_input
    assert list(wsgi_input) == LINES
    assert list(wsgi_input) == []


def test_nothing_is_pulled_past_the_end() -> None:
    pull = Pieces(b"abc")
    wsgi_input = Input(pull)
    assert wsgi_input.read() == b"abc"
    assert pull.calls == 2  # b"abc", then the end
    assert wsgi_input.read() == wsgi_input.readline() == b""
    assert wsgi_input.readlines() == []
    assert pull.calls == 2  # the end, once seen, is remembered
    assert wsgi_input.exhausted


def test_a_complete_prefetched_body_never_pulls() -> None:
    def pull() -> bytes:
        raise AssertionError("pulled past the body")

    wsgi_input = Input(pull, b"a\nb", complete=True)
    assert wsgi_input.exhausted
    assert wsgi_input.readlines() == [b"a\n", b"b"]
    assert wsgi_input.read() == b""


def test_prefetched_bytes_come_before_pulled_ones() -> None:
    wsgi_input = Input(Pieces(b"c\n"), b"a\nb")
    assert list(wsgi_input) == [b"a\n", b"bc\n"]


def test_reads_pull_only_what_they_need() -> None:
    pull = Pieces(b"one\n", b"two\n", b"three\n")
    wsgi_input = Input(pull)
    assert pull.calls == 0
    assert wsgi_input.readline() == b"one\n"
    assert pull.calls == 1  # the rest may not have arrived yet: don't wait for it
    assert wsgi_input.read(2) == b"tw"
    assert pull.calls == 2


def test_errors_from_pull_reach_the_app() -> None:
    def pull() -> bytes:
        raise ClientDisconnected("gone")

    wsgi_input = Input(pull, b"partial")
    assert wsgi_input.read(7) == b"partial"
    with pytest.raises(ClientDisconnected, match="gone"):
        wsgi_input.read()


def test_hundred_continue_headers_are_capitalized_by_default() -> None:
    wsgi_input = make_input()
    wsgi_input.set_hundred_continue_response_headers([("x-a", "1"), ("x-fOO-bar", "2")])
    assert wsgi_input.hundred_continue_headers == [("X-A", "1"), ("X-Foo-Bar", "2")]
    wsgi_input.set_hundred_continue_response_headers(
        [("x-a", "1")], capitalize_response_headers=False
    )
    assert wsgi_input.hundred_continue_headers == [("x-a", "1")]


def test_hundred_continue_headers_may_be_lists_as_eventlet_takes_them() -> None:
    wsgi_input = make_input()
    wsgi_input.set_hundred_continue_response_headers([["x-a", "1"]])  # type: ignore[list-item]
    assert wsgi_input.hundred_continue_headers == [("X-A", "1")]


# --- over real sockets ---------------------------------------------------------------

Environ = dict[str, Any]


def reading_app(read: Callable[[Any], object]) -> Callable[..., list[bytes]]:
    """An app that answers with ``repr(read(wsgi.input))``."""

    def app(environ: Environ, start_response: Any) -> list[bytes]:
        result = repr(read(environ["wsgi.input"])).encode()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [result]

    return app


NEXT = b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.mark.parametrize(
    ("read", "expected"),
    [
        (lambda f: f.read(), b"a\nbc\n"),
        (lambda f: f.read(-1), b"a\nbc\n"),
        (lambda f: f.read(None), b"a\nbc\n"),
        (lambda f: f.read(100), b"a\nbc\n"),
        (lambda f: f.readlines(), [b"a\n", b"bc\n"]),
        (lambda f: f.readlines(100), [b"a\n", b"bc\n"]),
        (lambda f: list(f), [b"a\n", b"bc\n"]),
        (lambda f: [f.readline(), f.readline(), f.readline()], [b"a\n", b"bc\n", b""]),
    ],
)
async def test_reads_stop_at_the_end_of_a_content_length_body(
    start_server, read: Callable[[Any], object], expected: object
) -> None:
    server = await start_server(reading_app(read))
    client = await RawClient.connect(server.port)
    # The body and a second request arrive together: reads must not run into it.
    await client.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\na\nbc\n" + NEXT)
    status, _, body = await client.read_response()
    assert (status, body) == (b"HTTP/1.1 200 OK", repr(expected).encode())
    status, _, body = await client.read_response()
    # The pipelined GET is answered, and has an empty body.
    assert (status, body) == (b"HTTP/1.1 200 OK", repr(read(make_input())).encode())
    await client.aclose()


async def test_chunked_body_lines_cross_chunk_boundaries(start_server) -> None:
    server = await start_server(reading_app(lambda f: list(f)))
    client = await RawClient.connect(server.port)
    await client.send(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    for chunk in (b"2\r\nli\r\n", b"9\r\nne 1\nline\r\n", b"4\r\n 2\n\n\r\n", b"4\r\nlast\r\n"):
        await client.send(chunk)
    await client.send(b"0\r\n\r\n" + NEXT)
    status, _, body = await client.read_response()
    assert (status, body) == (b"HTTP/1.1 200 OK", repr(LINES).encode())
    status, _, body = await client.read_response()
    assert (status, body) == (b"HTTP/1.1 200 OK", b"[]")
    await client.aclose()


async def test_chunked_body_read_in_sizes(start_server) -> None:
    def read(f: Any) -> list[bytes]:
        return [f.read(3), f.read(3), f.read(3), f.read()]

    server = await start_server(reading_app(read))
    client = await RawClient.connect(server.port)
    await client.send(
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        b"2\r\nab\r\n5\r\ncdefg\r\n0\r\n\r\n"
    )
    status, _, body = await client.read_response()
    assert (status, body) == (b"HTTP/1.1 200 OK", repr([b"abc", b"def", b"g", b""]).encode())
    await client.aclose()


async def test_hundred_continue_headers_on_the_wire(start_server) -> None:
    def app(environ: Environ, start_response: Any) -> list[bytes]:
        environ["wsgi.input"].set_hundred_continue_response_headers([("x-a", "1")])
        body = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body]

    server = await start_server(app)
    client = await RawClient.connect(server.port)
    await client.send(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"
    )
    # The interim response comes on the app's first read, with the app's headers.
    assert await client.read_until(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\nX-A: 1\r\n\r\n"
    await client.send(b"body" + NEXT)
    status, headers, body = await client.read_response()
    assert (status, body) == (b"HTTP/1.1 200 OK", b"body")
    assert b"connection" not in headers  # the body came: the connection stays usable
    status, _, body = await client.read_response()
    assert (status, body) == (b"HTTP/1.1 200 OK", b"")
    await client.aclose()
