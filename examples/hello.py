"""Minimal WSGI hello-world served by triowsgi.

Run it with::

    python examples/hello.py

then, from another terminal::

    curl http://127.0.0.1:8090/
"""

from collections.abc import Callable, Iterable
from typing import Any


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    body = b"Hello, world!\n"
    start_response(
        "200 OK",
        [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))],
    )
    return [body]


if __name__ == "__main__":
    import trio

    import triowsgi

    trio.run(triowsgi.serve, app, 8090)
