"""``python -m bench.slow_uploads``: slow uploads against a server with its defaults.

Issue 18's attack: N clients each start a 1 MB ``POST /upload`` and trickle its body at
600 bytes/s (above the 500 B/s ``body_min_rate``, so no body timeout ends them). Meanwhile
a plain ``GET /`` on a new connection at 5, 15 and 25 s must be answered within 2 s. At
20 s the server's resident memory and thread count are read, with the N uploads waiting;
at the end some uploads send the rest of their body at once and must get a 200 (the
server read every byte). Each server runs on its own, one after the other::

    python -m bench.slow_uploads --count 1000 --servers eventlet,triowsgi --tls

``--tls`` adds a triowsgi run over TLS (a trustme certificate). Needs eventlet installed
for its row (``nox -s bench`` has it).
"""

from __future__ import annotations

import argparse
import dataclasses
import socket
import ssl
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import trio

from .__main__ import raise_fd_limit
from .servers import SERVERS, Running, Settings, by_names, running

BODY_SIZE = 1_000_000
RATE = 600  # bytes per second per upload
TICK = 0.5  # seconds between an upload's sends
GETS_AT = (5.0, 15.0, 25.0)
MEMORY_AT = 20.0
DURATION = 28.0
ANSWER_WITHIN = 2.0
COMPLETED = 20  # uploads that send the rest at the end


@dataclasses.dataclass
class Outcome:
    name: str
    gets: list[float | None]  # seconds to each answer; None: none within 2 s
    rss_kib: int
    threads: int
    completed_ok: int
    upload_errors: int


def _threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0


async def _connect(port: int, context: ssl.SSLContext | None) -> trio.abc.Stream:
    stream: trio.abc.Stream = await trio.open_tcp_stream("127.0.0.1", port)
    if context is not None:
        stream = trio.SSLStream(stream, context, server_hostname="localhost")
    return stream


async def _get(port: int, context: ssl.SSLContext | None) -> float | None:
    started = time.perf_counter()
    with trio.move_on_after(ANSWER_WITHIN):
        stream = await _connect(port, context)
        try:
            await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            received = b""
            while b"\r\n\r\n" not in received:
                data = await stream.receive_some(4096)
                if not data:
                    return None
                received += data
            if received.startswith(b"HTTP/1.1 200"):
                return time.perf_counter() - started
        finally:
            await trio.aclose_forcefully(stream)
    return None


async def _upload(
    port: int,
    context: ssl.SSLContext | None,
    index: int,
    stop: trio.Event,
    results: dict[str, int],
) -> None:
    head = b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % BODY_SIZE
    piece = b"u" * int(RATE * TICK)
    try:
        stream = await _connect(port, context)
        await stream.send_all(head)
        sent = 0
        while not stop.is_set() and sent + len(piece) < BODY_SIZE:
            await stream.send_all(piece)
            sent += len(piece)
            with trio.move_on_after(TICK):
                await stop.wait()
        if index >= COMPLETED:
            await trio.aclose_forcefully(stream)
            return
        await stream.send_all(b"u" * (BODY_SIZE - sent))
        with trio.fail_after(10):
            answer = await stream.receive_some(4096)
        if answer.startswith(b"HTTP/1.1 200"):
            results["completed_ok"] += 1
        await trio.aclose_forcefully(stream)
    except (OSError, trio.BrokenResourceError, trio.TooSlowError):
        results["errors"] += 1


async def _attack(handle: Running, count: int, context: ssl.SSLContext | None) -> Outcome:
    stop = trio.Event()
    results = {"completed_ok": 0, "errors": 0}
    gets: list[float | None] = []
    memory = {"rss": 0, "threads": 0}
    started = trio.current_time()
    async with trio.open_nursery() as nursery:
        for index in range(count):
            nursery.start_soon(_upload, handle.port, context, index, stop, results)
            if index % 50 == 49:
                await trio.sleep(0.05)  # connect in bursts, as clients arrive
        moments = sorted([(t, "get") for t in GETS_AT] + [(MEMORY_AT, "memory")])
        for moment, what in moments:
            await trio.sleep_until(started + moment)
            if what == "get":
                gets.append(await _get(handle.port, context))
            else:
                memory["rss"] = handle.rss_kib()
                memory["threads"] = sum(map(_threads, handle.pids()))
        await trio.sleep_until(started + DURATION)
        stop.set()
    return Outcome(
        handle.server.name + (" (TLS)" if context else ""),
        gets,
        memory["rss"],
        memory["threads"],
        results["completed_ok"],
        results["errors"],
    )


def _tls_files(directory: Path) -> tuple[ssl.SSLContext, Path, Path]:
    import trustme

    ca = trustme.CA()
    leaf = ca.issue_cert("localhost", "127.0.0.1")
    cert, key = directory / "cert.pem", directory / "key.pem"
    leaf.private_key_and_cert_chain_pem.write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context, cert, key


def _tls_get(context: ssl.SSLContext) -> Callable[[int, str, float], bytes]:
    def get(port: int, path: str, timeout: float) -> bytes:
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        with context.wrap_socket(raw, server_hostname="localhost") as sock:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks)

    return get


def _report(outcomes: Sequence[Outcome], count: int) -> None:
    print(f"\n{count} uploads of 1 MB at {RATE} B/s; GET / at {GETS_AT} s (2 s limit)\n")
    print("| server | GET answered in (s) | RSS (MiB) | threads | completed | errors |")
    print("|---|---|---|---|---|---|")
    for o in outcomes:
        gets = ", ".join("none" if g is None else f"{g:.3f}" for g in o.gets)
        print(
            f"| {o.name} | {gets} | {o.rss_kib / 1024:.1f} | {o.threads} | "
            f"{o.completed_ok}/{min(COMPLETED, count)} | {o.upload_errors} |"
        )
    answered = [g for o in outcomes for g in o.gets if g is not None]
    if answered:
        print(f"\nmedian answer {statistics.median(answered):.3f} s")


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.slow_uploads", description=__doc__)
    p.add_argument("--count", type=int, default=200, help="slow uploads (200)")
    p.add_argument("--servers", default="eventlet,triowsgi", help="comma-separated")
    p.add_argument("--tls", action="store_true", help="also triowsgi over TLS")
    args = p.parse_args(argv)
    raise_fd_limit(args.count * 2 + 200)
    # The servers' defaults (eventlet's and triowsgi's max_size: 1024 connections).
    settings = Settings(threads=128, max_connections=1024)
    outcomes = []
    with tempfile.TemporaryDirectory() as tmp:
        context, cert, key = _tls_files(Path(tmp))
        runs = [(server, None) for server in by_names(args.servers.split(","))]
        if args.tls:
            base = SERVERS[1]
            tls_server = dataclasses.replace(
                base,
                arguments=lambda port, s: (
                    base.arguments(port, s) + f" --certfile {cert} --keyfile {key}"
                ),
            )
            runs.append((tls_server, context))
        for server, client_context in runs:
            get = None if client_context is None else _tls_get(client_context)
            with running(server, settings, None, get) as handle:
                outcomes.append(trio.run(_attack, handle, args.count, client_context))
                print(outcomes[-1], flush=True)
    _report(outcomes, args.count)


if __name__ == "__main__":
    main()
