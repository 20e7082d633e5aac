"""The one WSGI app every server runs, routed by path, one route per scenario.

It is plain PEP 3333 with no server-specific code, so every server does the same work.
Paths under ``/flask/`` and ``/django/`` go to a Flask app (:mod:`bench.flask_app`) and a
Django project (:mod:`bench.djangosite`), both imported with this module, as a deployed
app imports its framework when the server loads it: every server starts with the same
heap, and a server that prepares its heap once the app is loaded (triowsgi's command
runs ``gc.freeze()``) finds the frameworks there, as it would in a real app. (They were
imported on their first request until 2026-12-05; the harness makes one before measuring,
so the heap under measurement is the same either way.)
Under eventlet, ``time.sleep`` is monkey-patched into a green sleep, as an eventlet
application's blocking database call would be. ``/h11`` is not measured: the harness asks
it once per server process which h11 build triowsgi parses with there.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, BinaryIO, Final

from .files import FILE_BLOCK_SIZE, FILE_PATH, FILE_SIZE

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


class FileBlocks:
    """What an app sends where the server has no ``wsgi.file_wrapper`` (eventlet,
    hypercorn): the file in blocks, closed by ``close()``, as werkzeug's fallback does."""

    def __init__(self, file: BinaryIO, block_size: int) -> None:
        self.file = file
        self.block_size = block_size

    def __iter__(self) -> Iterator[bytes]:
        while block := self.file.read(self.block_size):
            yield block

    def close(self) -> None:
        self.file.close()


def file(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    # A download as Django's FileResponse or Flask's send_file make it: an open file,
    # Content-Length, and the server's wsgi.file_wrapper when it has one.
    opened = FILE_PATH.open("rb")
    start_response(
        "200 OK",
        [("Content-Type", "application/octet-stream"), ("Content-Length", str(FILE_SIZE))],
    )
    wrapper = environ.get("wsgi.file_wrapper", FileBlocks)
    return wrapper(opened, FILE_BLOCK_SIZE)


def h11_build(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    # Looked up, never imported: under another server, triowsgi is not loaded ("none").
    build = getattr(sys.modules.get("triowsgi._h11"), "BUILD", "none")
    return _text(start_response, build.encode())


def not_found(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    start_response("404 Not Found", [("Content-Length", "0")])
    return [b""]


App = Callable[[Environ, StartResponse], Iterable[bytes]]


def _load_framework(prefix: str) -> App:
    if prefix == "/flask/":
        from .flask_app import app as flask

        return flask
    from .djangosite.wsgi import application

    return application  # type: ignore[no-any-return]


FRAMEWORK_PREFIXES: Final = ("/flask/", "/django/")
_framework_apps: Final = {prefix: _load_framework(prefix) for prefix in FRAMEWORK_PREFIXES}


def framework(prefix: str) -> App:
    """The Flask or the Django app."""
    return _framework_apps[prefix]


ROUTES: Final = {
    "/": hello,
    "/stream": stream,
    "/upload": upload,
    "/blocking": blocking,
    "/file": file,
    "/h11": h11_build,
}


def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    """The benchmark app: ``/`` hello, ``/stream``, ``/upload`` (POST), ``/blocking``,
    ``/file`` (:func:`bench.files.ensure_file` must have written the file), ``/flask/...`` and
    ``/django/...``."""
    path = environ["PATH_INFO"]
    route = ROUTES.get(path)
    if route is not None:
        return route(environ, start_response)
    for prefix in FRAMEWORK_PREFIXES:
        if path.startswith(prefix):
            return framework(prefix)(environ, start_response)
    return not_found(environ, start_response)
