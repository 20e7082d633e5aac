"""``python -m bench.ws``: WebSockets, triowsgi against the servers eventlet users know.

Two measures, each server started once and pinned to one CPU, the client on the other:

- **echo**: round trips per second over 64 connections (64-byte text messages, each
  connection sending its next message when the last came back), in ``--rounds``
  interleaved rounds of ``--duration`` s; the median per server and its ratio to eventlet
  within each round (median and interquartile range);
- **idle**: ``--idle N`` WebSockets opened and left open: the server's resident memory
  added per connection, and how long a plain ``GET /`` takes meanwhile.

Servers, all with the same echo handler:

- ``triowsgi`` (a thread handler, eventlet.websocket's API) and ``triowsgi-async`` (an
  ``async def`` handler: no thread), ``triowsgi.websocket.WebSocketWSGI``;
- ``eventlet``: ``eventlet.websocket.WebSocketWSGI`` on ``eventlet.wsgi.server``,
  monkey-patched;
- ``gunicorn``: the gthread worker with simple-websocket (flask-sock's library), a thread
  per WebSocket (``--threads`` = the idle count + 64).

The clients are the ``websockets`` library's (asyncio), without compression, so every
server frames the same bytes. Needs eventlet, gunicorn and simple-websocket installed
(``nox -s bench`` installs them).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

# -- the apps (imported by the server processes) ------------------------------------


def _hello(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "6")])
    return [b"hello\n"]


def echo(ws: Any) -> None:
    """The handler every server runs (eventlet.websocket's API)."""
    while (message := ws.wait()) is not None:
        ws.send(message)


async def echo_async(ws: Any) -> None:
    async for message in ws:
        await ws.send(message)


def _dispatch(routes: dict[str, Callable[..., Iterable[bytes]]]) -> Callable[..., Any]:
    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        return routes.get(environ["PATH_INFO"], _hello)(environ, start_response)

    return app


def triowsgi_app() -> Callable[..., Any]:
    from triowsgi.websocket import WebSocketWSGI

    return _dispatch({"/ws": WebSocketWSGI(echo), "/ws-async": WebSocketWSGI(echo_async)})


def gthread_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    if environ["PATH_INFO"] != "/ws":
        return _hello(environ, start_response)
    import simple_websocket

    ws = simple_websocket.Server(environ)
    try:
        while True:
            ws.send(ws.receive())
    except simple_websocket.ConnectionClosed:
        pass
    raise StopIteration  # as flask-sock does: gunicorn then writes no response


def eventlet_app() -> Callable[..., Any]:
    import eventlet.websocket

    return _dispatch({"/ws": eventlet.websocket.WebSocketWSGI(echo)})


_app: Callable[..., Any] | None = None


def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    """What ``triowsgi bench.ws:app`` serves."""
    global _app
    if _app is None:
        _app = triowsgi_app()
    return _app(environ, start_response)  # type: ignore[no-any-return]


# -- the harness ---------------------------------------------------------------------

ECHO_CONNECTIONS = 64
MESSAGE = "m" * 64


@dataclasses.dataclass(frozen=True)
class Target:
    name: str
    server: str  # which process serves it (two triowsgi targets share one)
    path: str


TARGETS = (
    Target("eventlet", "eventlet", "/ws"),
    Target("triowsgi", "triowsgi", "/ws"),
    Target("triowsgi-async", "triowsgi", "/ws-async"),
    Target("gunicorn", "gunicorn", "/ws"),
)


async def _echo_load(port: int, path: str, duration: float) -> float:
    from websockets.asyncio.client import connect

    count = 0
    stop = time.perf_counter() + duration

    async def one() -> None:
        nonlocal count
        async with connect(f"ws://127.0.0.1:{port}{path}", compression=None) as ws:
            while time.perf_counter() < stop:
                await ws.send(MESSAGE)
                await ws.recv()
                count += 1

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(ECHO_CONNECTIONS)))
    return count / (time.perf_counter() - started)


async def _get_seconds(port: int) -> float:
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    await reader.read()
    writer.close()
    return time.perf_counter() - started


async def _idle(port: int, path: str, count: int, rss: Callable[[], int]) -> tuple[float, float]:
    """KiB of server memory per idle WebSocket, and the slowest of 5 GETs meanwhile."""
    from websockets.asyncio.client import connect

    before = rss()
    sockets = []
    semaphore = asyncio.Semaphore(200)  # connect in waves, as clients arrive

    async def open_one() -> None:
        async with semaphore:
            sockets.append(
                await connect(f"ws://127.0.0.1:{port}{path}", compression=None, ping_interval=None)
            )

    await asyncio.gather(*(open_one() for _ in range(count)))
    await asyncio.sleep(1)  # let the server settle (threads started, buffers trimmed)
    per_connection = (rss() - before) / count
    slowest = max([await _get_seconds(port) for _ in range(5)])
    await asyncio.gather(*(ws.close() for ws in sockets))
    return per_connection, slowest


def main(argv: Sequence[str] | None = None) -> None:
    from .__main__ import pick_cpus, raise_fd_limit
    from .servers import BACKLOG, HOST, Server, Settings, running

    p = argparse.ArgumentParser(prog="python -m bench.ws", description=__doc__)
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--idle", type=int, default=2000, help="idle WebSockets per server")
    p.add_argument("--idle-async", type=int, default=10000, help="for triowsgi-async")
    p.add_argument("--targets", default=",".join(t.name for t in TARGETS))
    args = p.parse_args(argv)
    names = args.targets.split(",")
    targets = [t for t in TARGETS if t.name in names]
    most = max(args.idle, args.idle_async)
    raise_fd_limit(2 * most + 1000)
    server_cpu, client_cpu = pick_cpus(0, 1)
    settings = Settings(threads=args.idle + ECHO_CONNECTIONS, max_connections=most + 100)
    commands = {
        "eventlet": lambda port, s: f"-m bench.ws_eventlet {port} {s.max_connections}",
        "triowsgi": lambda port, s: (
            f"-m triowsgi bench.ws:app --host {HOST} --port {port} --no-access-log "
            f"--max-size {s.max_connections}"
        ),
        "gunicorn": lambda port, s: (
            f"-m gunicorn --worker-class gthread --workers 1 --threads {s.threads} "
            f"--worker-connections {s.max_connections} --bind {HOST}:{port} "
            f"--backlog {BACKLOG} --graceful-timeout 1 bench.ws:gthread_app"
        ),
    }
    needed = sorted({t.server for t in targets})
    servers = {name: Server(name, (), commands[name], "") for name in needed}
    echo: dict[str, list[float]] = {t.name: [] for t in targets}
    ratios: dict[str, list[float]] = {t.name: [] for t in targets}
    idle: dict[str, tuple[float, float]] = {}
    with _all_running(servers, settings, server_cpu, running) as handles:
        for round_ in range(args.rounds):
            order = targets[round_ % len(targets) :] + targets[: round_ % len(targets)]
            results = {}
            for t in order:
                rate = asyncio.run(_echo_load(handles[t.server].port, t.path, args.duration))
                results[t.name] = rate
                echo[t.name].append(rate)
                print(f"round {round_ + 1} {t.name}: {rate:,.0f} round trips/s", flush=True)
            if "eventlet" in results:
                for name, rate in results.items():
                    ratios[name].append(rate / results["eventlet"])
        for t in targets:
            count = args.idle_async if t.name == "triowsgi-async" else args.idle
            handle = handles[t.server]
            idle[t.name] = asyncio.run(_idle(handle.port, t.path, count, handle.rss_kib))
            print(f"idle {t.name}: {idle[t.name][0]:.1f} KiB each over {count}", flush=True)
    _report(targets, echo, ratios, idle, args)
    del client_cpu


def _all_running(servers: dict[str, Any], settings: Any, cpu: int | None, running: Any) -> Any:
    import contextlib

    @contextlib.contextmanager
    def started() -> Any:
        with contextlib.ExitStack() as stack:
            yield {
                name: stack.enter_context(running(server, settings, cpu))
                for name, server in servers.items()
            }

    return started()


def _report(
    targets: Sequence[Target],
    echo: dict[str, list[float]],
    ratios: dict[str, list[float]],
    idle: dict[str, tuple[float, float]],
    args: argparse.Namespace,
) -> None:
    print(f"\n{time.strftime('%Y-%m-%d %H:%M')}, {_processor()}, {os.cpu_count()} CPUs")
    print(f"echo: {ECHO_CONNECTIONS} connections, {args.rounds} rounds of {args.duration} s\n")
    print(
        "| server | echo round trips/s (median) | ratio to eventlet (median, IQR) "
        "| idle: KiB per WebSocket | GET while idle (slowest of 5) |"
    )
    print("|---|---|---|---|---|")
    for t in targets:
        r = ratios[t.name]
        ratio = f"{statistics.median(r):.2f}x ({_iqr(r)})" if r else "-"
        kib, get = idle.get(t.name, (0.0, 0.0))
        count = args.idle_async if t.name == "triowsgi-async" else args.idle
        print(
            f"| {t.name} | {statistics.median(echo[t.name]):,.0f} | {ratio} | "
            f"{kib:.1f} ({count:,} open) | {get * 1000:.0f} ms |"
        )


def _iqr(values: list[float]) -> str:
    """The interquartile range, as the HTTP harness reports it."""
    if len(values) < 2:
        return f"{values[0]:.2f}-{values[0]:.2f}"
    low, _, high = statistics.quantiles(values, n=4, method="inclusive")
    return f"{low:.2f}-{high:.2f}"


def _processor() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown processor"
    for line in text.splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown processor"


if __name__ == "__main__":
    main()
