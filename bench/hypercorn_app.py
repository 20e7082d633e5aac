""":func:`bench.apps.app` for hypercorn's Trio worker: hypercorn's own
``TrioWSGIMiddleware``, plus an answer to the ASGI lifespan protocol.

Why not ``hypercorn --worker-class trio bench.apps:app``: with a WSGI app, hypercorn's Trio
worker (0.17.3 and 0.18.0, on trio 0.35) dies at start-up with ``trio.ClosedResourceError``:
its WSGI wrapper returns at once from the lifespan scope, which closes the lifespan channel
before the worker sends ``lifespan.startup`` into it. The request path is unchanged:
``TrioWSGIMiddleware`` runs the same ``WSGIWrapper`` with the same ``trio.to_thread.run_sync``
and ``trio.from_thread.run`` that the worker would hand it.
"""

from __future__ import annotations

from typing import Any, Final

from hypercorn.middleware import TrioWSGIMiddleware

from bench.apps import app as wsgi_app

# hypercorn's wsgi_max_body_size default (the middleware's own default is 64 KiB).
MAX_BODY_SIZE: Final = 16 * 1024 * 1024

_wsgi = TrioWSGIMiddleware(wsgi_app, max_body_size=MAX_BODY_SIZE)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The ASGI app hypercorn serves: lifespan answered here, HTTP to the WSGI app."""
    if scope["type"] != "lifespan":
        await _wsgi(scope, receive, send)
        return
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
