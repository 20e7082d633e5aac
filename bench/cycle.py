"""``python -m bench.cycle``: the CPU cost of one hello request's logic, with no I/O and
no thread: h11 alone (parsing the request and framing the response), then everything
triowsgi does (h11 parsing the request, the head checks, the environ, the app call, the
response's head and framing by triowsgi's own code, the next cycle).

What is left of a request's measured cost beyond this is the kernel and trio's
scheduling (see NOTES.md).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from triowsgi._config import Config
from triowsgi._framing import ResponseFraming
from triowsgi._h11 import h11
from triowsgi._input import Input
from triowsgi._request import as_http11, check_line_ends, check_request, check_request_line
from triowsgi._wsgi import Batch, ConnectionInfo, Responder, build_environ

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"
HEADERS = [("Content-Type", "text/plain"), ("Content-Length", "15")]
BODY = b"Hello, world!\r\n"
CYCLES = 20_000
ROUNDS = 5
INFO = ConnectionInfo("http", "127.0.0.1", "8080", "127.0.0.1", "50000")
CONFIG = Config.from_options()


def _app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", HEADERS)
    return [BODY]


class _NoWrites:
    """The Responder's connection: a list response sends nothing through it."""

    def must_close(self) -> bool:
        return False

    def send_from_thread(self, batch: Batch) -> None:
        raise AssertionError("a list response needs no write()")


def h11_only(cycles: int) -> None:
    conn = h11.Connection(h11.SERVER)
    for _ in range(cycles):
        conn.receive_data(REQUEST)
        conn.next_event()
        conn.next_event()
        conn.send(h11.Response(status_code=200, headers=HEADERS))
        conn.send(h11.Data(data=BODY))
        conn.send(h11.EndOfMessage())
        conn.start_next_cycle()


def triowsgi_logic(cycles: int) -> None:
    conn = h11.Connection(h11.SERVER)
    framing = ResponseFraming()
    for _ in range(cycles):
        check_request_line(REQUEST)
        conn.receive_data(REQUEST)
        request = conn.next_event()
        check_line_ends(REQUEST)
        _, closes = check_request(request, CONFIG)
        request = as_http11(request)
        conn.next_event()
        framing.start(request.method, http11=True, keep_alive=not closes)
        environ = build_environ(request, INFO, CONFIG.environ, Input(bytes, complete=True))
        responder = Responder(
            _app,
            environ,
            method=request.method,
            minimum_chunk_size=CONFIG.minimum_chunk_size,
            capitalize_names=True,
            channel=_NoWrites(),
        )
        batch = responder.call_app()
        assert batch.head is not None
        pieces = [framing.head(b"HTTP/1.1", batch.head)]
        pieces += framing.data(batch.chunks[0])
        pieces.append(framing.end())
        b"".join(pieces)
        conn = h11.Connection(h11.SERVER)  # as the reader does (trailing data: none)


def _per_cycle(fn: Any) -> float:
    rounds = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        fn(CYCLES)
        rounds.append((time.perf_counter() - started) / CYCLES * 1e6)
    return statistics.median(rounds)


if __name__ == "__main__":
    print(f"one hello request, no I/O, median of {ROUNDS} x {CYCLES} ({h11.__name__}):")
    print(f"  h11 alone            {_per_cycle(h11_only):6.1f} us")
    print(f"  triowsgi's logic     {_per_cycle(triowsgi_logic):6.1f} us")
