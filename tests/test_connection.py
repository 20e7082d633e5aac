"""HTTP/1.1 on one connection: keep-alive, pipelining, framing, Expect: 100-continue,
unread bodies, the server's own error responses, and timeouts.

Most tests speak raw bytes through RawClient so that status lines and framing are
checked exactly as they go over the wire.
"""

from __future__ import annotations

import contextlib
import email.utils
import re
from collections.abc import Iterator
from typing import Any

import pytest
import trio
from conftest import RawClient, hello_app

from triowsgi._h11 import h11
from triowsgi._reader import _WAITING, DRAIN_LIMIT

HELLO_RESPONSE_BODY = b"Hello, world!\n"
GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
IMF_FIXDATE = re.compile(
    rb"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), [0-9]{2} "
    rb"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [0-9]{4} "
    rb"[0-9]{2}:[0-9]{2}:[0-9]{2} GMT"
)


# -- apps ---------------------------------------------------------------------------


def echo_path_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [environ["PATH_INFO"].encode("latin-1")]


def echo_body_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return [body]


def echo_fold_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [])
    return [environ["HTTP_X_FOLD"].encode("latin-1")]


STREAM_PIECES = [b"a" * 5000, b"b" * 5000, b"c" * 5000]


def stream_app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
    """A generator bigger than minimum_chunk_size: no Content-Length can be computed."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield from STREAM_PIECES


def teapot_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("418 I'm a teapot", [])
    return [b"short and stout"]


def failing_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    raise RuntimeError("secret-detail-42")


def fail_after_head_app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
    start_response("200 OK", [])
    yield b"x"
    raise RuntimeError("broken mid-stream")


# -- helpers ------------------------------------------------------------------------


async def connect(port: int) -> RawClient:
    return await RawClient.connect(port)


async def read_head(client: RawClient) -> tuple[bytes, dict[bytes, bytes]]:
    """A response head only (for HEAD and close-delimited responses)."""
    head = await client.read_until(b"\r\n\r\n")
    status, *lines = head[:-4].split(b"\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    return status, headers


async def assert_closed(client: RawClient) -> None:
    """The server closes the connection after what was read so far, sending nothing more."""
    with trio.fail_after(5):
        assert await client.read_to_eof() == b""
    await client.aclose()


async def assert_error(client: RawClient, status_line: bytes) -> bytes:
    """A complete error response of the server's own, then a closed connection."""
    status, headers, body = await client.read_response()
    assert status == status_line
    assert headers[b"connection"] == b"close"
    assert int(headers[b"content-length"]) == len(body)
    await assert_closed(client)
    return body


async def send_and_expect_error(port: int, request: bytes, status_line: bytes) -> bytes:
    client = await connect(port)
    await client.send(request)
    return await assert_error(client, status_line)


# -- keep-alive ---------------------------------------------------------------------


async def test_two_requests_share_one_connection(start_server) -> None:
    server = await start_server(echo_path_app)
    client = await connect(server.port)
    for path in (b"/first", b"/second"):
        await client.send(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path)
        status, headers, body = await client.read_response()
        assert status == b"HTTP/1.1 200 OK"
        assert b"connection" not in headers
        assert body == path
    await client.aclose()


async def test_http10_request_gets_response_then_close(start_server) -> None:
    server = await start_server(hello_app)
    client = await connect(server.port)
    await client.send(b"GET / HTTP/1.0\r\n\r\n" + GET)  # the second request is never read
    status, headers, body = await client.read_response()
    assert status == b"HTTP/1.1 200 OK"
    assert headers[b"connection"] == b"close"
    assert body == HELLO_RESPONSE_BODY
    await assert_closed(client)


async def test_connection_close_from_client_is_honoured(start_server) -> None:
    server = await start_server(hello_app)
    client = await connect(server.port)
    await client.send(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" + GET)
    status, headers, body = await client.read_response()
    assert status == b"HTTP/1.1 200 OK"
    assert headers[b"connection"] == b"close"
    assert body == HELLO_RESPONSE_BODY
    await assert_closed(client)


async def test_keepalive_false_closes_after_each_response(start_server) -> None:
    server = await start_server(hello_app, keepalive=False)
    client = await connect(server.port)
    await client.send(GET + GET)
    status, headers, body = await client.read_response()
    assert status == b"HTTP/1.1 200 OK"
    assert headers[b"connection"] == b"close"
    assert body == HELLO_RESPONSE_BODY
    await assert_closed(client)


async def test_keepalive_seconds_closes_an_idle_connection(start_server) -> None:
    server = await start_server(hello_app, keepalive=0.3)
    client = await connect(server.port)
    await client.send(GET)
    status, headers, _ = await client.read_response()
    assert status == b"HTTP/1.1 200 OK"
    assert b"connection" not in headers  # kept alive, until it idles too long
    started = trio.current_time()
    await assert_closed(client)
    assert trio.current_time() - started >= 0.2


async def test_keepalive_seconds_closes_a_connection_that_never_sends(start_server) -> None:
    server = await start_server(hello_app, keepalive=0.3)
    await assert_closed(await connect(server.port))


async def test_half_closed_client_still_gets_its_response(start_server) -> None:
    server = await start_server(hello_app)
    client = await connect(server.port)
    await client.send(GET)
    await client.stream.send_eof()
    status, _, body = await client.read_response()
    assert status == b"HTTP/1.1 200 OK"
    assert body == HELLO_RESPONSE_BODY
    await assert_closed(client)


# -- pipelining ---------------------------------------------------------------------


async def test_fifty_pipelined_requests_answered_in_order(start_server) -> None:
    server = await start_server(echo_path_app)
    client = await connect(server.port)
    await client.send(b"".join(b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(50)))
    for i in range(50):
        status, _, body = await client.read_response()
        assert status == b"HTTP/1.1 200 OK"
        assert body == b"/%d" % i
    await client.aclose()


# -- HEAD ---------------------------------------------------------------------------


@pytest.mark.parametrize("app", [hello_app, stream_app], ids=["list", "generator"])
async def test_head_sends_headers_only(start_server, app) -> None:
    server = await start_server(app)
    client = await connect(server.port)
    await client.send(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n" + GET)
    head_status, head_headers = await read_head(client)
    # The GET right behind it parses: the HEAD response carried no body bytes.
    status, headers, body = await client.read_response()
    assert head_status == status == b"HTTP/1.1 200 OK"
    assert body == (HELLO_RESPONSE_BODY if app is hello_app else b"".join(STREAM_PIECES))
    if app is hello_app:
        assert head_headers[b"content-length"] == headers[b"content-length"] == b"14"
    await client.aclose()


# -- bodies and response framing ----------------------------------------------------


async def test_content_length_body_is_echoed(start_server) -> None:
    server = await start_server(echo_body_app)
    client = await connect(server.port)
    await client.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world")
    status, headers, body = await client.read_response()
    assert status == b"HTTP/1.1 200 OK"
    assert headers[b"content-length"] == b"11"
    assert body == b"hello world"
    await client.aclose()


async def test_chunked_body_is_echoed_and_connection_reused(start_server) -> None:
    server = await start_server(echo_body_app)
    client = await connect(server.port)
    request = (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n"
    )
    await client.send(request + request)
    for _ in range(2):
        status, _, body = await client.read_response()
        assert status == b"HTTP/1.1 200 OK"
        assert body == b"hello world"
    await client.aclose()


async def test_generator_response_is_chunked_on_http11(start_server) -> None:
    server = await start_server(stream_app)
    client = await connect(server.port)
    await client.send(GET)
    status, headers = await read_head(client)
    assert status == b"HTTP/1.1 200 OK"
    assert headers[b"transfer-encoding"] == b"chunked"
    assert b"content-length" not in headers
    assert b"connection" not in headers
    body = bytearray()
    while size := int(await client.read_until(b"\r\n"), 16):
        body += await client.read_exactly(size)
        assert await client.read_exactly(2) == b"\r\n"
    assert await client.read_exactly(2) == b"\r\n"  # the terminating 0 chunk is complete
    assert body == b"".join(STREAM_PIECES)
    await client.send(GET)  # and the connection is reusable
    status, _, body = await client.read_response()
    assert body == b"".join(STREAM_PIECES)
    await client.aclose()


async def test_generator_response_is_close_delimited_on_http10(start_server) -> None:
    server = await start_server(stream_app)
    client = await connect(server.port)
    await client.send(b"GET / HTTP/1.0\r\n\r\n")
    status, headers = await read_head(client)
    assert status == b"HTTP/1.1 200 OK"
    assert b"transfer-encoding" not in headers
    assert b"content-length" not in headers
    assert headers[b"connection"] == b"close"
    with trio.fail_after(5):
        assert await client.read_to_eof() == b"".join(STREAM_PIECES)
    await client.aclose()


async def test_list_result_gets_content_length_date_and_no_server(start_server) -> None:
    server = await start_server(hello_app)
    client = await connect(server.port)
    await client.send(GET)
    _, headers, body = await client.read_response()
    assert headers[b"content-length"] == b"%d" % len(HELLO_RESPONSE_BODY)
    assert body == HELLO_RESPONSE_BODY
    assert IMF_FIXDATE.fullmatch(headers[b"date"])
    sent = email.utils.parsedate_to_datetime(headers[b"date"].decode())
    now = email.utils.parsedate_to_datetime(email.utils.formatdate(usegmt=True))
    assert abs((now - sent).total_seconds()) < 60
    assert b"server" not in headers
    await client.aclose()


async def test_reason_phrase_comes_from_the_wsgi_status(start_server) -> None:
    server = await start_server(teapot_app)
    client = await connect(server.port)
    await client.send(GET)
    status, _, body = await client.read_response()
    assert status == b"HTTP/1.1 418 I'm a teapot"
    assert body == b"short and stout"
    await client.aclose()


# -- Expect: 100-continue -----------------------------------------------------------

EXPECT_HEAD = b"POST / HTTP/%s\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"


async def test_100_continue_sent_when_the_app_reads_the_body(start_server) -> None:
    server = await start_server(echo_body_app)
    client = await connect(server.port)
    await client.send(EXPECT_HEAD % b"1.1")
    assert await client.read_until(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
    await client.send(b"hello")
    status, headers, body = await client.read_response()
    assert status == b"HTTP/1.1 200 OK"
    assert body == b"hello"
    assert b"connection" not in headers  # the body arrived: framing is known, keep alive
    await client.send(GET)
    status, _, body = await client.read_response()
    assert body == b""
    await client.aclose()


async def test_no_100_continue_when_the_app_answers_without_reading(start_server) -> None:
    server = await start_server(hello_app)
    client = await connect(server.port)
    await client.send(EXPECT_HEAD % b"1.1")
    status, headers, body = await client.read_response()
    assert status == b"HTTP/1.1 200 OK"  # not 100
    assert headers[b"connection"] == b"close"
    assert body == HELLO_RESPONSE_BODY
    await assert_closed(client)


@pytest.mark.parametrize(
    ("version", "expected"),
    [(b"1.1", b"HTTP/1.1 100 Continue\r\n\r\n"), (b"1.0", b"")],
)
async def test_100_continue_only_for_http11(start_server, version, expected) -> None:
    # The body never comes: the server gives up after socket_timeout, so everything it
    # sent in the meantime can be read up to the close.
    server = await start_server(echo_body_app, socket_timeout=0.3)
    client = await connect(server.port)
    await client.send(EXPECT_HEAD % version)
    with trio.fail_after(5):
        assert await client.read_to_eof() == expected
    await client.aclose()


async def test_http10_expect_with_body_is_answered(start_server) -> None:
    server = await start_server(echo_body_app)
    client = await connect(server.port)
    await client.send(EXPECT_HEAD % b"1.0" + b"hello")
    status, _, body = await client.read_response()
    assert status == b"HTTP/1.1 200 OK"
    assert body == b"hello"
    await assert_closed(client)


# -- unread request bodies ----------------------------------------------------------


async def test_small_unread_body_is_drained_for_the_next_request(start_server) -> None:
    server = await start_server(echo_path_app)
    client = await connect(server.port)
    await client.send(
        b"POST /ignored HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123456789"
        b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    for path in (b"/ignored", b"/next"):
        status, _, body = await client.read_response()
        assert status == b"HTTP/1.1 200 OK"
        assert body == path
    await client.aclose()


async def test_small_unread_chunked_body_is_drained_for_the_next_request(start_server) -> None:
    server = await start_server(echo_path_app)
    client = await connect(server.port)
    await client.send(
        b"POST /ignored HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n0\r\n\r\nGET /next HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    for path in (b"/ignored", b"/next"):
        _, _, body = await client.read_response()
        assert body == path
    await client.aclose()


async def test_a_crlf_after_a_body_keeps_the_connection_open(start_server) -> None:
    # RFC 9112 §2.2: empty lines before a request line are skipped, also when they are
    # all that came after the body (old browsers sent a CRLF after a POST's body).
    server = await start_server(echo_path_app)
    client = await connect(server.port)
    await client.send(b"POST /first HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc\r\n")
    status, _, body = await client.read_response()
    assert (status, body) == (b"HTTP/1.1 200 OK", b"/first")
    await client.send(b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
    status, _, body = await client.read_response()
    assert (status, body) == (b"HTTP/1.1 200 OK", b"/next")
    await client.aclose()


def test_the_stand_in_for_an_idle_state_machine_takes_and_sends_nothing() -> None:
    # Shared by every idle connection: an app thread that outlived its response must
    # not pass bytes to or from another client through it.
    with pytest.raises(RuntimeError):
        _WAITING.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    with pytest.raises(h11.LocalProtocolError):
        _WAITING.send(h11.Data(data=b"x"))
    assert isinstance(_WAITING.next_event(), h11.ConnectionClosed)


async def test_large_unread_body_closes_after_the_response(start_server) -> None:
    server = await start_server(hello_app)
    client = await connect(server.port)
    size = DRAIN_LIMIT + 256 * 1024
    head = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size

    async def send_body() -> None:
        await client.send(head)
        # The server may close before all of it is read; that is the point.
        with contextlib.suppress(trio.BrokenResourceError):
            for _ in range(size // 65536):
                await client.send(b"x" * 65536)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send_body)
        status, _, body = await client.read_response()
        assert status == b"HTTP/1.1 200 OK"
        assert body == HELLO_RESPONSE_BODY
        with trio.fail_after(5):
            assert await client.read_to_eof() == b""
    await client.aclose()


# -- the server's own error responses -----------------------------------------------


async def test_target_longer_than_url_length_limit_gets_414(start_server) -> None:
    server = await start_server(hello_app, url_length_limit=100)
    ok = b"GET /%s HTTP/1.1\r\nHost: x\r\n\r\n" % (b"a" * 99)  # 100 bytes: allowed
    client = await connect(server.port)
    await client.send(ok)
    assert (await client.read_response())[0] == b"HTTP/1.1 200 OK"
    await client.send(b"GET /%s HTTP/1.1\r\nHost: x\r\n\r\n" % (b"a" * 100))
    await assert_error(client, b"HTTP/1.1 414 URI Too Long")


async def test_request_line_longer_than_the_head_buffer_gets_414(start_server) -> None:
    server = await start_server(hello_app)
    request = b"GET /%s HTTP/1.1\r\nHost: x\r\n\r\n" % (b"a" * 70 * 1024)
    await send_and_expect_error(server.port, request, b"HTTP/1.1 414 URI Too Long")


async def test_more_than_100_header_fields_gets_431(start_server) -> None:
    server = await start_server(hello_app)
    fields = b"".join(b"X-H%d: v\r\n" % i for i in range(100))  # plus Host: 101
    request = b"GET / HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n"
    await send_and_expect_error(
        server.port, request, b"HTTP/1.1 431 Request Header Fields Too Large"
    )


async def test_100_header_fields_are_allowed(start_server) -> None:
    server = await start_server(hello_app)
    fields = b"".join(b"X-H%d: v\r\n" % i for i in range(99))
    client = await connect(server.port)
    await client.send(b"GET / HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n")
    assert (await client.read_response())[0] == b"HTTP/1.1 200 OK"
    await client.aclose()


async def test_header_line_over_8k_gets_431(start_server) -> None:
    server = await start_server(hello_app)
    request = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: %s\r\n\r\n" % (b"a" * 8200)
    await send_and_expect_error(
        server.port, request, b"HTTP/1.1 431 Request Header Fields Too Large"
    )


async def test_header_block_over_64k_gets_431(start_server) -> None:
    server = await start_server(hello_app)
    fields = b"".join(b"X-H%d: %s\r\n" % (i, b"a" * 4000) for i in range(20))
    request = b"GET / HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n"
    await send_and_expect_error(
        server.port, request, b"HTTP/1.1 431 Request Header Fields Too Large"
    )


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(b"HELLO\r\n\r\n", id="garbage-request-line"),
        pytest.param(b"GET /\r\nHost: x\r\n\r\n", id="no-version"),
        pytest.param(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            id="content-length-and-transfer-encoding",
        ),
        pytest.param(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
            id="conflicting-content-length",
        ),
        pytest.param(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +10\r\n\r\n0123456789",
            id="plus-content-length",
        ),
        pytest.param(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1_0\r\n\r\n0123456789",
            id="underscore-content-length",
        ),
        pytest.param(b"GET /caf\xe9 HTTP/1.1\r\nHost: x\r\n\r\n", id="non-ascii-target"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\nX-\x80: v\r\n\r\n", id="high-byte-name"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\nX-Nul: a\x00b\r\n\r\n", id="nul-in-value"),
    ],
)
async def test_malformed_request_gets_400(start_server, request_bytes) -> None:
    server = await start_server(hello_app)
    await send_and_expect_error(server.port, request_bytes, b"HTTP/1.1 400 Bad Request")


async def test_unsupported_transfer_encoding_gets_501(start_server) -> None:
    server = await start_server(hello_app)
    request = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nabc"
    await send_and_expect_error(server.port, request, b"HTTP/1.1 501 Not Implemented")


async def test_http2_request_line_gets_505(start_server) -> None:
    server = await start_server(hello_app)
    await send_and_expect_error(
        server.port,
        b"GET / HTTP/2.0\r\nHost: x\r\n\r\n",
        b"HTTP/1.1 505 HTTP Version Not Supported",
    )


@pytest.mark.parametrize("size_line", [b"0x3", b"-0"])
async def test_bad_chunk_size_read_by_the_app_gets_400(start_server, size_line) -> None:
    server = await start_server(echo_body_app)
    request = (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        + size_line
        + b"\r\nabc\r\n0\r\n\r\n"
    )
    await send_and_expect_error(server.port, request, b"HTTP/1.1 400 Bad Request")


async def test_bad_chunk_size_arriving_while_the_app_reads_gets_400(start_server) -> None:
    # The error surfaces in the app's wsgi.input.read(); the app doesn't catch it, and
    # the server answers with the HTTPError's status.
    server = await start_server(echo_body_app)
    client = await connect(server.port)
    await client.send(
        b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    # 100 Continue proves the app is reading before the bad chunk is sent.
    assert await client.read_until(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
    await client.send(b"3\r\nabc\r\n0x3\r\nabc\r\n0\r\n\r\n")
    await assert_error(client, b"HTTP/1.1 400 Bad Request")


async def test_obs_fold_header_is_folded_into_one_space(start_server) -> None:
    server = await start_server(echo_fold_app)
    client = await connect(server.port)
    await client.send(b"GET / HTTP/1.1\r\nHost: x\r\nX-Fold: first\r\n \t second\r\n\r\n")
    status, _, body = await client.read_response()
    assert status == b"HTTP/1.1 200 OK"
    assert body == b"first second"
    await client.aclose()


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\r\n\r\n" + GET, id="before-the-first-request"),
        pytest.param(GET + b"\r\n" + GET, id="between-pipelined-requests"),
        pytest.param(GET + b"\r\n\r\n\n" + GET, id="several-between-pipelined-requests"),
    ],
)
async def test_empty_lines_before_a_request_line_are_skipped(start_server, data) -> None:
    server = await start_server(hello_app)
    client = await connect(server.port)
    await client.send(data)
    for _ in range(data.count(GET)):
        status, _, body = await client.read_response()
        assert status == b"HTTP/1.1 200 OK"
        assert body == HELLO_RESPONSE_BODY
    await client.aclose()


async def test_empty_line_after_a_body_in_its_own_write_is_skipped(start_server) -> None:
    server = await start_server(echo_body_app)
    client = await connect(server.port)
    await client.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
    assert (await client.read_response())[2] == b"hi"
    await client.send(b"\r\n")  # as some old clients send after a POST body
    await client.send(GET)
    status, _, body = await client.read_response()
    assert status == b"HTTP/1.1 200 OK"
    assert body == b""
    await client.aclose()


# -- application errors -------------------------------------------------------------


async def test_app_exception_gets_500_without_traceback(start_server) -> None:
    server = await start_server(failing_app)
    client = await connect(server.port)
    await client.send(GET)
    body = await assert_error(client, b"HTTP/1.1 500 Internal Server Error")
    assert b"secret-detail-42" not in body
    assert b"Traceback" not in body


async def test_app_exception_with_debug_sends_traceback(start_server) -> None:
    server = await start_server(failing_app, debug=True)
    client = await connect(server.port)
    await client.send(GET)
    body = await assert_error(client, b"HTTP/1.1 500 Internal Server Error")
    assert b"Traceback" in body
    assert b"RuntimeError: secret-detail-42" in body


async def test_server_keeps_serving_after_an_app_exception(start_server) -> None:
    calls = []

    def sometimes_failing_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        calls.append(environ["PATH_INFO"])
        if environ["PATH_INFO"] == "/fail":
            raise RuntimeError("boom")
        return hello_app(environ, start_response)

    server = await start_server(sometimes_failing_app)
    client = await connect(server.port)
    await client.send(b"GET /fail HTTP/1.1\r\nHost: x\r\n\r\n" + GET)
    await assert_error(client, b"HTTP/1.1 500 Internal Server Error")
    assert calls == ["/fail"]  # the pipelined request died with the connection
    client = await connect(server.port)
    await client.send(GET)
    status, _, body = await client.read_response()
    assert status == b"HTTP/1.1 200 OK"
    assert body == HELLO_RESPONSE_BODY
    await client.aclose()


async def test_app_exception_after_head_leaves_an_incomplete_chunked_body(start_server) -> None:
    server = await start_server(fail_after_head_app, minimum_chunk_size=1)
    client = await connect(server.port)
    await client.send(GET)
    status, headers = await read_head(client)
    assert status == b"HTTP/1.1 200 OK"
    assert headers[b"transfer-encoding"] == b"chunked"
    with trio.fail_after(5):
        assert await client.read_to_eof() == b"1\r\nx\r\n"  # no terminating 0 chunk
    await client.aclose()


# -- timeouts -----------------------------------------------------------------------


async def test_socket_timeout_closes_a_stalled_request_head(start_server) -> None:
    server = await start_server(hello_app, socket_timeout=0.3)
    client = await connect(server.port)
    await client.send(b"GET / HTTP/1.1\r\nHost:")
    started = trio.current_time()
    await assert_closed(client)  # no response: the request never arrived
    assert trio.current_time() - started >= 0.2


async def test_socket_timeout_does_not_cut_a_prompt_client(start_server) -> None:
    server = await start_server(hello_app, socket_timeout=0.3)
    client = await connect(server.port)
    await client.send(GET)
    status, _, body = await client.read_response()
    assert status == b"HTTP/1.1 200 OK"
    assert body == HELLO_RESPONSE_BODY
    await client.aclose()
