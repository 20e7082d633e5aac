"""``Expect: 100-continue`` with extra headers on the interim response.

A client that sends ``Expect: 100-continue`` waits for ``HTTP/1.1 100 Continue`` before
sending its body. triowsgi sends it on the app's first read of ``wsgi.input``, so an app
can look at the request first and refuse it without ever receiving the body. Headers set
with ``wsgi.input.set_hundred_continue_response_headers(...)`` go in the interim
response (names capitalised unless ``capitalize_response_headers=False`` is passed).

Run it with::

    python examples/hundred_continue.py

then, from another terminal (``-v`` shows the interim response and its headers)::

    head -c 100000 /dev/urandom > file
    curl -v -H 'Expect: 100-continue' --data-binary @file http://127.0.0.1:8090/upload
    # < HTTP/1.1 100 Continue
    # < X-Upload-Limit: 10000000
    # ...
    # received 100000 bytes

An upload declared too large is refused without reading it (no 100 Continue is sent,
so curl never sends the 20 MB)::

    head -c 20000000 /dev/zero > big
    curl -v -H 'Expect: 100-continue' --data-binary @big http://127.0.0.1:8090/upload
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

LIMIT = 10_000_000


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    length = int(environ.get("CONTENT_LENGTH") or 0)
    if length > LIMIT:
        # Answered without reading: the client never gets a 100 and never sends the body.
        start_response("413 Content Too Large", [("Content-Type", "text/plain")])
        return [b"too large\n"]
    wsgi_input = environ["wsgi.input"]
    wsgi_input.set_hundred_continue_response_headers([("x-upload-limit", str(LIMIT))])
    received = 0
    while piece := wsgi_input.read(65536):  # the first read sends the 100 Continue
        received += len(piece)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"received {received} bytes\n".encode()]


if __name__ == "__main__":
    import trio

    import triowsgi

    trio.run(triowsgi.serve, app, 8090)
