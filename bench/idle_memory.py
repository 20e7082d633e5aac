"""``python -m bench.idle_memory [N]``: where an idle keep-alive connection's memory goes.

Starts a triowsgi server in a child process with ``tracemalloc`` on, opens N connections
(2,000 by default) that each make one request and then stay idle, and prints the Python
allocations the idle connections added, per connection, by source line. The harness's
``idle`` scenario measures the RSS; this says what it is made of.
"""

from __future__ import annotations

import functools
import gc
import socket
import subprocess
import sys
import time
import tracemalloc
from typing import Any

PORT = 8119
TOP = 25


def _serve() -> None:
    import trio

    import triowsgi

    tracemalloc.start(1)
    baseline: list[tracemalloc.Snapshot] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        path = environ["PATH_INFO"]
        if path == "/snapshot":
            gc.collect()
            baseline[:] = [tracemalloc.take_snapshot()]
        elif path == "/report":
            gc.collect()
            per = int(environ["QUERY_STRING"])
            stats = tracemalloc.take_snapshot().compare_to(baseline[0], "lineno")
            total = sum(stat.size_diff for stat in stats)
            print(f"{total / per:,.0f} bytes of Python objects per idle connection:")
            for stat in stats[:TOP]:
                size, objects = stat.size_diff / per, stat.count_diff / per
                print(f"{size:8.0f} B {objects:5.1f} objects  {stat.traceback}")
            sys.stdout.flush()
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    serve = functools.partial(
        triowsgi.serve, app, PORT, "127.0.0.1", max_size=100_000, log_output=False
    )
    trio.run(serve)


def _get(sock: socket.socket, target: str) -> None:
    sock.sendall(f"GET {target} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
    received = b""
    while not received.endswith(b"ok"):
        received += sock.recv(4096)


def main(count: int) -> None:
    server = subprocess.Popen([sys.executable, "-m", "bench.idle_memory", "--serve"])
    try:
        for _ in range(100):
            try:
                control = socket.create_connection(("127.0.0.1", PORT))
                break
            except ConnectionRefusedError:
                time.sleep(0.1)
        for _ in range(50):  # warm up: imports, caches, the first threads
            with socket.create_connection(("127.0.0.1", PORT)) as warm:
                _get(warm, "/")
        _get(control, "/snapshot")
        idle = []
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", PORT))
            _get(sock, "/")
            idle.append(sock)
        _get(control, f"/report?{count}")
        for sock in idle:
            sock.close()
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        _serve()
    else:
        main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
