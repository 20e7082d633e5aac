"""Responses written from the app's thread: what the socket takes now goes at once, the
rest goes back to the connection task, and nothing is written once the connection closes.

:class:`DirectSocket` is driven here over a real socket pair, and end to end through a
client that reads slowly, or not at all.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

import pytest
import trio
from conftest import RawClient, RecordingLog, StartServer

import triowsgi
from triowsgi import ClientDisconnected
from triowsgi._direct import DirectSocket, direct_socket

BIG = bytes(range(256)) * 4096 * 8  # 8 MiB: more than any socket buffer takes at once


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    server, client = socket.socketpair()
    server.setblocking(False)
    yield server, client
    server.close()
    client.close()


def test_what_the_socket_takes_is_written_at_once(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    server, client = pair
    assert DirectSocket(server.fileno()).write([b"head\r\n", b"", b"body"]) == []
    assert client.recv(100) == b"head\r\nbody"


def test_the_rest_is_returned_exactly_when_the_socket_is_full(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    server, client = pair
    rest = DirectSocket(server.fileno()).write([b"head", BIG, b"tail"])
    unsent = b"".join(rest)
    assert 0 < len(unsent) < len(BIG) + 8
    client.setblocking(True)
    written = bytearray()
    while len(written) < len(BIG) + 8 - len(unsent):
        written += client.recv(1 << 20)
    assert bytes(written) + unsent == b"head" + BIG + b"tail"


def test_a_full_socket_returns_everything(pair: tuple[socket.socket, socket.socket]) -> None:
    server, _ = pair
    writer = DirectSocket(server.fileno())
    writer.write([BIG])
    assert writer.write([b"more", b"bytes"]) == [b"more", b"bytes"]


def test_nothing_is_written_after_close(pair: tuple[socket.socket, socket.socket]) -> None:
    server, client = pair
    writer = DirectSocket(server.fileno())
    writer.close()
    with pytest.raises(ClientDisconnected):
        writer.write([b"late"])
    client.setblocking(False)
    with pytest.raises(BlockingIOError):
        client.recv(10)


def test_a_vanished_peer_is_a_disconnect(pair: tuple[socket.socket, socket.socket]) -> None:
    server, client = pair
    client.close()
    with pytest.raises(ClientDisconnected):
        DirectSocket(server.fileno()).write([b"anyone there?"])


async def test_only_plain_socket_streams_get_a_writer() -> None:
    a, b = trio.socket.socketpair()
    plain = trio.SocketStream(a)
    tls = trio.SSLStream(trio.SocketStream(b), ssl.create_default_context())
    assert isinstance(direct_socket(plain), DirectSocket)
    assert direct_socket(tls) is None
    await plain.aclose()
    await tls.transport_stream.aclose()


# -- end to end --------------------------------------------------------------------------


def big_stream(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
    start_response("200 OK", [("Content-Length", str(len(BIG)))])
    for start in range(0, len(BIG), 1 << 20):
        yield BIG[start : start + (1 << 20)]


async def test_a_slow_reader_gets_every_byte_and_the_next_response(
    start_server: StartServer,
) -> None:
    handle = await start_server(big_stream)
    client = await RawClient.connect(handle.port)
    request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    await client.send(request * 2)
    for _ in range(2):
        # Reading in small pieces keeps the server's socket full: most of the body goes
        # through the connection task's waits for the socket, not the direct write.
        status, _, body = await client.read_response()
        assert status == b"HTTP/1.1 200 OK"
        assert body == BIG
    await client.aclose()


class TimeoutLog(RecordingLog):
    def __init__(self) -> None:
        super().__init__()
        self.timed_out = trio.Event()

    def info(self, message: str) -> None:
        super().info(message)
        if "timed out" in message:
            self.timed_out.set()

    debug = error = info


MIB = b"x" * (1 << 20)
ENDLESS = 256  # MiB: far more than the kernel buffers of both ends hold


def endless_stream(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
    start_response("200 OK", [("Content-Length", str(ENDLESS * len(MIB)))])
    for _ in range(ENDLESS):
        yield MIB


async def test_a_client_that_stops_reading_is_dropped_at_socket_timeout(
    start_server: StartServer,
) -> None:
    log = TimeoutLog()
    handle = await start_server(endless_stream, socket_timeout=0.5, log=log)
    stuck = await RawClient.connect(handle.port)
    await stuck.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    with trio.fail_after(10):
        await log.timed_out.wait()
    assert len(await stuck.read_to_eof()) < ENDLESS * len(MIB)  # cut short, then closed
    fresh = await RawClient.connect(handle.port)
    await fresh.send(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
    head = await fresh.read_until(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    await fresh.aclose()
    await stuck.aclose()


def test_read_nowait_returns_what_arrived_none_when_nothing_did_and_empty_at_eof(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    server, client = pair
    direct = DirectSocket(server.fileno())
    assert direct.read_nowait(100) is None
    client.sendall(b"GET / HTTP/1.1\r\n")
    assert direct.read_nowait(100) == b"GET / HTTP/1.1\r\n"
    client.shutdown(socket.SHUT_WR)
    assert direct.read_nowait(100) == b""
    direct.close()
    with pytest.raises(ClientDisconnected):
        direct.read_nowait(100)


async def test_an_idle_keepalive_connection_times_out_and_a_busy_one_does_not(
    start_server: StartServer,
) -> None:
    # The idle wait has its own timeout path (keepalive seconds) on plain sockets; a
    # response the client is slow to take is not idleness (send_timeout bounds it).
    keepalive = 0.2
    handle = await start_server(big_stream, keepalive=keepalive)
    sock = trio.socket.socket()
    # A small window, so the server's writes wait on this client (no buffer takes BIG).
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    await sock.connect(("127.0.0.1", handle.port))
    client = RawClient(trio.SocketStream(sock))
    await client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await client.read_until(b"\r\n\r\n")).startswith(b"HTTP/1.1 200 OK\r\n")
    first = await client.read_exactly(1 << 20)
    await trio.sleep(3 * keepalive)  # reading nothing: the server's send waits that long
    try:
        rest = await client.read_exactly(len(BIG) - len(first))
    except EOFError:
        pytest.fail("the server closed a response the client was slow to read, as if idle")
    assert first + rest == BIG
    done = trio.current_time()
    assert await client.read_to_eof() == b""  # closed by the server once idle too long
    assert keepalive / 2 <= trio.current_time() - done < keepalive + 1.0
    await client.aclose()


class Events:
    """An endless stream, 8 KiB every 10 ms (a feed, server-sent events), whose close()
    stops its producer and waits for it: the iteration then ends."""

    def __init__(self) -> None:
        self.stopped = threading.Event()
        self.noticed = threading.Event()

    def __iter__(self) -> Events:
        return self

    def __next__(self) -> bytes:
        time.sleep(0.01)
        if self.stopped.is_set():
            self.noticed.set()
            raise StopIteration
        return b"e" * 8192

    def close(self) -> None:
        self.stopped.set()
        self.noticed.wait(1)  # as joining a producer thread would


def trickle(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return Events() if environ["PATH_INFO"] == "/stream" else [b"hello"]


async def test_a_stream_cut_short_by_shutdown_never_looks_complete(
    nursery: trio.Nursery,
) -> None:
    # When the grace period ends mid-stream, the worker still producing it must write
    # nothing more: it would end the chunked body with a valid terminator.
    scope = trio.CancelScope()

    async def run(task_status: trio.TaskStatus[triowsgi.ServerHandle]) -> None:
        with scope:
            await triowsgi.serve(
                trickle, 0, "127.0.0.1", graceful_timeout=0.2, log=RecordingLog(),
                task_status=task_status,
            )  # fmt: skip

    handle = await nursery.start(run)
    client = await RawClient.connect(handle.port)
    await client.send(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
    await client.read_until(b"\r\n\r\n")
    await client.read_until(b"eeee")  # the stream is flowing
    scope.cancel()
    tail = await client.read_to_eof()
    assert not (bytes(client.buffer) + tail).endswith(b"\r\n0\r\n\r\n")
    await client.aclose()


async def test_an_endless_stream_does_not_keep_other_requests_from_the_only_thread(
    start_server: StartServer, nursery: trio.Nursery
) -> None:
    handle = await start_server(trickle, threads=1, log=RecordingLog())
    streaming = await RawClient.connect(handle.port)
    await streaming.send(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
    await streaming.read_until(b"\r\n\r\n")

    async def keep_reading() -> None:
        while await streaming.stream.receive_some(1 << 16):
            pass

    nursery.start_soon(keep_reading)
    other = await RawClient.connect(handle.port)
    await other.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    with trio.fail_after(5):
        status, _, body = await other.read_response()
    assert (status, body) == (b"HTTP/1.1 200 OK", b"hello")
    await other.aclose()
