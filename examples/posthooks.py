"""Posthooks: work done after the response has gone out, off the request's clock.

The app appends ``(func, args, kwargs)`` to ``environ["triowsgi.posthooks"]`` (eventlet's
``environ["eventlet.posthooks"]`` is the same list). Once the client has the whole
response (or has gone away), each hook is called as ``func(environ, *args, **kwargs)``,
in order, in a worker thread; an exception in one is logged and the next still runs.
The access log line comes after them.

Run it with::

    python examples/posthooks.py

then, from another terminal::

    curl http://127.0.0.1:8090/hello

The response comes at once; the server's terminal then shows the hooks' lines.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any


def record_visit(environ: dict[str, Any], started: float, *, label: str) -> None:
    # Blocking work is fine here: this runs in a worker thread, after the response.
    elapsed = time.perf_counter() - started
    print(
        f"[{label}] {environ['REQUEST_METHOD']} {environ['PATH_INFO']} answered "
        f"{elapsed * 1000:.1f} ms after the app started (in {threading.current_thread().name})",
        file=sys.stderr,
    )


def send_audit_mail(environ: dict[str, Any]) -> None:
    print(f"[audit] would mail about {environ['PATH_INFO']} now", file=sys.stderr)


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    hooks = environ["triowsgi.posthooks"]
    hooks.append((record_visit, (time.perf_counter(),), {"label": "visit"}))
    hooks.append((send_audit_mail, (), {}))
    start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
    return [b"Done; the posthooks run after you have this.\n"]


if __name__ == "__main__":
    import trio

    import triowsgi

    trio.run(triowsgi.serve, app, 8090)
