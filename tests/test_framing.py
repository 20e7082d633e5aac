"""The response's framing (triowsgi/_framing.py): the bytes h11 would write, for the
requests and app headers that decide them.

h11 framed every response before; these tests hold triowsgi's head and framing
(``build_response``, then ``ResponseFraming``, told of the request by ``check_request``)
to h11's output byte for byte, given the app's own headers (h11 is the reference here,
as the requests' parser it still is), and to its errors for a body that does not match
its Content-Length.
"""

from __future__ import annotations

import contextlib
import itertools
from typing import Any

import h11
import pytest
from conftest import RawClient

from triowsgi._config import Config
from triowsgi._framing import FramingError, ResponseFraming
from triowsgi._h11 import h11 as server_h11
from triowsgi._request import check_request
from triowsgi._response import ResponseHead, build_response

METHODS = (b"GET", b"HEAD", b"POST")
VERSIONS = (b"1.0", b"1.1")
REQUEST_CONNECTION = (None, b"close", b"keep-alive")
STATUSES = ("200 OK", "204 No Content", "304 Not Modified", "404 Not Found")
# The app's framing headers (with a 5-byte body where a length is given).
APP_HEADERS: tuple[list[tuple[str, str]], ...] = (
    [],
    [("Content-Length", "5")],
    [("Content-Length", "5"), ("Content-Length", "5")],
    [("Transfer-Encoding", "chunked")],
    [("Content-Length", "5"), ("Transfer-Encoding", "chunked")],
    [("Connection", "close")],
    [("Connection", "keep-alive"), ("Content-Length", "5")],
    [("Connection", "Keep-Alive, close")],
    [("Connection", "Upgrade"), ("Upgrade", "x")],
    [("Connection", "X-Foo, keep-alive"), ("Content-Length", "005")],
    [("Transfer-Encoding", "Chunked")],
)
BODIES = ((), (b"hel", b"lo"))  # as the app's batches; none, or 5 bytes in two


def request_bytes(method: bytes, version: bytes, connection: bytes | None) -> bytes:
    head = b"%s / HTTP/%s\r\nHost: x\r\n" % (method, version)
    if connection is not None:
        head += b"Connection: %s\r\n" % connection
    if method == b"POST":
        head += b"Content-Length: 0\r\n"
    return head + b"\r\n"


def by_h11(
    request: bytes,
    head: ResponseHead,
    headers: list[tuple[str, str]],
    body: tuple[bytes, ...],
    added: list[tuple[str, str]] = [],  # noqa: B006 (never changed)
) -> tuple[bytes, bool]:
    """What h11 writes for the app's ``headers`` (then ``head``'s Date and the server's
    ``added`` headers, as triowsgi gave them to h11) and ``body`` after ``request``, and
    whether the connection could carry another request."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(request)
    assert isinstance(conn.next_event(), h11.Request)
    assert isinstance(conn.next_event(), h11.EndOfMessage)
    date = dict(head.fields)[b"Date"]
    response = h11.Response(
        status_code=head.status_code,
        reason=head.status[5:-2],
        headers=[*headers, ("Date", date), *added],
    )
    out = conn.send(response)
    # (h11 frames 204 and 304 as empty bodies, where the writer sends nothing at all)
    sends_body = head.status_code not in (204, 304) and not request.startswith(b"HEAD")
    for data in body if sends_body else ():
        out += conn.send(h11.Data(data=data))
    out += conn.send(h11.EndOfMessage())
    return out, conn.our_state is h11.DONE and conn.their_state is h11.DONE


def by_triowsgi(request: bytes, head: ResponseHead, body: tuple[bytes, ...]) -> tuple[bytes, bool]:
    """The same, framed by triowsgi, told of the request by check_request."""
    conn = server_h11.Connection(server_h11.SERVER)
    conn.receive_data(request)
    parsed = conn.next_event()
    _, closes = check_request(parsed, CONFIG)
    framing = ResponseFraming()
    framing.start(parsed.method, http11=parsed.http_version == b"1.1", keep_alive=not closes)
    out = framing.head(b"HTTP/1.1", head)
    for data in body if framing.sends_body else ():
        out += b"".join(framing.data(data))
    out += framing.end()
    return out, framing.reusable


CONFIG = Config.from_options()
CASES = list(itertools.product(METHODS, VERSIONS, REQUEST_CONNECTION, STATUSES, APP_HEADERS))


@pytest.mark.parametrize(("method", "version", "connection", "status", "headers"), CASES)
def test_the_bytes_and_the_keep_alive_are_h11s(
    method: bytes,
    version: bytes,
    connection: bytes | None,
    status: str,
    headers: list[tuple[str, str]],
) -> None:
    request = request_bytes(method, version, connection)
    headers = [("X-App", "1"), *headers]
    head = build_response(
        status, headers, capitalize_names=False, content_length=None, close=False
    )
    for body in BODIES if not any(name == "Content-Length" for name, _ in headers) else BODIES[1:]:
        assert by_triowsgi(request, head, body) == by_h11(request, head, headers, body)


@pytest.mark.parametrize("close", [False, True])
@pytest.mark.parametrize("version", VERSIONS)
def test_a_length_the_server_computed_and_its_own_close_are_h11s(
    version: bytes, close: bool
) -> None:
    request = request_bytes(b"GET", version, None)
    head = build_response("200 OK", [], capitalize_names=True, content_length=5, close=close)
    added = [("Content-Length", "5"), *([("Connection", "close")] if close else [])]
    expected = by_h11(request, head, [], (b"hello",), added)
    assert by_triowsgi(request, head, (b"hello",)) == expected


def framed(headers: list[tuple[str, str]]) -> ResponseFraming:
    """A framing with the head of a 200 with ``headers`` done."""
    framing = ResponseFraming()
    framing.start(b"GET", http11=True, keep_alive=True)
    head = build_response(
        "200 OK", headers, capitalize_names=False, content_length=None, close=False
    )
    framing.head(b"HTTP/1.1", head)
    return framing


def test_more_bytes_than_the_content_length_are_refused_and_nothing_goes_after() -> None:
    framing = framed([("Content-Length", "3")])
    assert framing.data(b"ab") == [b"ab"]
    with pytest.raises(FramingError, match="Too much data"):
        framing.data(b"cd")
    # An app that catches the error and goes on sends nothing the client would take for
    # the rest of the body, and the connection is not reused.
    with pytest.raises(FramingError):
        framing.data(b"c")
    with pytest.raises(FramingError):
        framing.end()
    assert not framing.reusable


def test_fewer_bytes_than_the_content_length_are_an_error_at_the_end() -> None:
    framing = framed([("Content-Length", "3")])
    framing.data(b"ab")
    with pytest.raises(FramingError, match="Too little data"):
        framing.end()
    with pytest.raises(FramingError):
        framing.end()
    assert not framing.reusable


def test_a_file_body_counts_against_the_content_length_as_data_does() -> None:
    framing = framed([("Content-Length", "5")])
    framing.data(b"ab")
    framing.file_body(3)
    assert framing.end() == b"" and framing.reusable
    framing = framed([("Content-Length", "5")])
    with pytest.raises(FramingError, match="Too much data"):
        framing.file_body(6)
    assert not framing.reusable


def test_a_file_body_needs_a_content_length() -> None:
    # Chunked framing would have to surround the file's bytes: never sent by sendfile.
    framing = framed([])
    with pytest.raises(FramingError, match="a file body needs a Content-Length"):
        framing.file_body(3)
    assert not framing.reusable


def test_a_chunked_body_skips_empty_data_and_passes_bytes_uncopied() -> None:
    framing = framed([])
    data = b"x" * 20
    pieces = framing.data(data)
    assert pieces == [b"14\r\n", data, b"\r\n"] and pieces[1] is data
    assert framing.data(b"") == []
    assert framing.end() == b"0\r\n\r\n"
    assert framing.reusable


def test_nothing_goes_after_the_end() -> None:
    # A thread of the app that outlived its response must not frame bytes after it.
    framing = framed([])
    framing.end()
    with pytest.raises(FramingError):
        framing.data(b"late")
    with pytest.raises(FramingError):
        framing.end()


async def test_an_app_that_catches_a_framing_error_gets_a_500_and_a_close(start_server) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        write = start_response("200 OK", [("Content-Length", "3")])
        with contextlib.suppress(ValueError):
            write(b"too long")
        return [b"abc"]

    server = await start_server(app)
    client = await RawClient.connect(server.port)
    await client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, _ = await client.read_response()
    assert status == b"HTTP/1.1 500 Internal Server Error"
    assert headers[b"connection"] == b"close"
    assert await client.read_to_eof() == b""
    await client.aclose()


@pytest.mark.parametrize(
    "headers",
    [
        [("Content-Length", "x")],
        [("Content-Length", "5"), ("Content-Length", "6")],
        [("Content-Length", "5, 6")],
        [("Content-Length", "1" * 21)],
        [("Transfer-Encoding", "gzip")],
        [("Transfer-Encoding", "chunked"), ("Transfer-Encoding", "chunked")],
    ],
)
def test_framing_headers_h11_refuses_are_the_apps_error(headers: list[tuple[str, str]]) -> None:
    with pytest.raises(ValueError, match="invalid response from the application"):
        build_response("200 OK", headers, capitalize_names=False, content_length=None, close=False)
    with pytest.raises(h11.LocalProtocolError):
        h11.Response(status_code=200, headers=headers)
