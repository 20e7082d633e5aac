"""The one WSGI app every server runs, routed by path, one route per scenario.

It is plain PEP 3333 with no server-specific code, so every server does the same work.
Under eventlet, ``time.sleep`` is monkey-patched into a green sleep, as an eventlet
application's blocking database call would be. ``/h11`` is not measured: the harness asks
it once per server process which h11 build triowsgi parses with there.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable
from typing import Any, Final

StartResponse = Callable[..., Any]
Environ = dict[str, Any]

HELLO_BODY: Final = b"Hello, world!\r\n"  # 15 bytes
STREAM_CHUNK: Final = b"x" * (64 * 1024)
STREAM_CHUNKS: Final = 16  # 16 x 64 KiB = 1 MiB
BLOCKING_SECONDS: Final = 0.050  # a blocking database call
UPLOAD_REPLY: Final = b"received\n"


def _text(start_response: StartResponse, body: bytes) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def hello(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    return _text(start_response, HELLO_BODY)


def stream(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    # A generator, so that the server sees 16 separate yields; Content-Length as a file
    # download would send it (no chunked framing).
    size = len(STREAM_CHUNK) * STREAM_CHUNKS
    start_response(
        "200 OK",
        [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))],
    )
    return (STREAM_CHUNK for _ in range(STREAM_CHUNKS))


def upload(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    length = int(environ.get("CONTENT_LENGTH") or 0)
    received = len(environ["wsgi.input"].read(length))
    if received != length:
        start_response("400 Bad Request", [("Content-Length", "0")])
        return [b""]
    return _text(start_response, UPLOAD_REPLY)


def blocking(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    time.sleep(BLOCKING_SECONDS)
    return _text(start_response, HELLO_BODY)


def h11_build(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    # Looked up, never imported: under another server, triowsgi is not loaded ("none").
    build = getattr(sys.modules.get("triowsgi._h11"), "BUILD", "none")
    return _text(start_response, build.encode())


def not_found(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    start_response("404 Not Found", [("Content-Length", "0")])
    return [b""]


ROUTES: Final = {
    "/": hello,
    "/stream": stream,
    "/upload": upload,
    "/blocking": blocking,
    "/h11": h11_build,
}


def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    """The benchmark app: ``/`` hello, ``/stream``, ``/upload`` (POST), ``/blocking``."""
    return ROUTES.get(environ["PATH_INFO"], not_found)(environ, start_response)
