"""The response's framing (triowsgi/_framing.py): the bytes h11 would write, for every
combination of request and response that decides them.

h11 framed every response before; these tests hold triowsgi's own framing to h11's
output byte for byte (h11 is the reference here, as the requests' parser it still is),
and to its errors for a body that does not match its Content-Length.
"""

from __future__ import annotations

import itertools

import h11
import pytest

from triowsgi._framing import FramingError, ResponseFraming
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
)
BODIES = ((), (b"hel", b"lo"))  # as the app's batches; none, or 5 bytes in two


def request_bytes(method: bytes, version: bytes, connection: bytes | None) -> bytes:
    head = b"%s / HTTP/%s\r\nHost: x\r\n" % (method, version)
    if connection is not None:
        head += b"Connection: %s\r\n" % connection
    if method == b"POST":
        head += b"Content-Length: 0\r\n"
    return head + b"\r\n"


def by_h11(request: bytes, head: ResponseHead, body: tuple[bytes, ...]) -> tuple[bytes, bool]:
    """What h11 writes for ``head`` and ``body`` after ``request``, and whether the
    connection could carry another request."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(request)
    assert isinstance(conn.next_event(), h11.Request)
    assert isinstance(conn.next_event(), h11.EndOfMessage)
    reason = head.status[5:-2]
    out = conn.send(h11.Response(status_code=head.status_code, reason=reason, headers=head.fields))
    # (h11 frames 204 and 304 as empty bodies, where the writer sends nothing at all)
    sends_body = head.status_code not in (204, 304) and not request.startswith(b"HEAD")
    for data in body if sends_body else ():
        out += conn.send(h11.Data(data=data))
    out += conn.send(h11.EndOfMessage())
    return out, conn.our_state is h11.DONE and conn.their_state is h11.DONE


def by_triowsgi(request: bytes, head: ResponseHead, body: tuple[bytes, ...]) -> tuple[bytes, bool]:
    method, _, rest = request.partition(b" ")
    framing = ResponseFraming()
    framing.start(
        method,
        http11=b"HTTP/1.1\r\n" in rest,
        keep_alive=b"Connection: close" not in rest,
    )
    out = framing.head(b"HTTP/1.1", head)
    for data in body if framing.sends_body else ():
        out += b"".join(framing.data(data))
    out += framing.end()
    return out, framing.reusable


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
    head = build_response(
        status,
        [("X-App", "1"), *headers],
        capitalize_names=False,
        content_length=None,
        close=False,
    )
    for body in BODIES if not any(name == "Content-Length" for name, _ in headers) else BODIES[1:]:
        assert by_triowsgi(request, head, body) == by_h11(request, head, body)


@pytest.mark.parametrize("close", [False, True])
@pytest.mark.parametrize("version", VERSIONS)
def test_a_length_the_server_computed_and_its_own_close_are_h11s(
    version: bytes, close: bool
) -> None:
    request = request_bytes(b"GET", version, None)
    head = build_response("200 OK", [], capitalize_names=True, content_length=5, close=close)
    assert by_triowsgi(request, head, (b"hello",)) == by_h11(request, head, (b"hello",))


def test_more_bytes_than_the_content_length_are_refused() -> None:
    framing = ResponseFraming()
    framing.start(b"GET", http11=True, keep_alive=True)
    framing.head(
        b"HTTP/1.1",
        build_response(
            "200 OK",
            [("Content-Length", "3")],
            capitalize_names=False,
            content_length=None,
            close=False,
        ),
    )
    assert framing.data(b"ab") == [b"ab"]
    with pytest.raises(FramingError, match="Too much data"):
        framing.data(b"cd")
    assert not framing.reusable


def test_fewer_bytes_than_the_content_length_are_an_error_at_the_end() -> None:
    framing = ResponseFraming()
    framing.start(b"GET", http11=True, keep_alive=True)
    framing.head(
        b"HTTP/1.1",
        build_response(
            "200 OK",
            [("Content-Length", "3")],
            capitalize_names=False,
            content_length=None,
            close=False,
        ),
    )
    framing.data(b"ab")
    with pytest.raises(FramingError, match="Too little data"):
        framing.end()
    assert not framing.reusable


def test_a_chunked_body_skips_empty_data_and_passes_bytes_uncopied() -> None:
    framing = ResponseFraming()
    framing.start(b"GET", http11=True, keep_alive=True)
    framing.head(
        b"HTTP/1.1",
        build_response("200 OK", [], capitalize_names=False, content_length=None, close=False),
    )
    data = b"x" * 20
    pieces = framing.data(data)
    assert pieces == [b"14\r\n", data, b"\r\n"] and pieces[1] is data
    assert framing.data(b"") == []
    assert framing.end() == b"0\r\n\r\n"
    assert framing.reusable


def test_nothing_goes_after_the_end() -> None:
    # A thread of the app that outlived its response must not frame bytes after it.
    framing = ResponseFraming()
    framing.start(b"GET", http11=True, keep_alive=True)
    framing.head(
        b"HTTP/1.1",
        build_response("200 OK", [], capitalize_names=False, content_length=None, close=False),
    )
    framing.end()
    with pytest.raises(FramingError):
        framing.data(b"late")
    with pytest.raises(FramingError):
        framing.end()


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
