"""``python -m bench.cpu``: the CPU time each server spends per request, user and system.

Every server runs at 100% of its core in the throughput loads, so req/s alone can't say
where a server's time goes; this does: for each load and server, ``wrk`` runs for
``--duration`` seconds while the server's process tree's user and system time
(``/proc/<pid>/stat``) is read over the middle of the run, and divided by the requests
served meanwhile (wrk's rate). Same pinning and servers as ``python -m bench``;
``--triowsgi-python``/``--speed-python`` as there (default: this interpreter, which then
serves a row with whichever h11 it has).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from .__main__ import pick_cpus, raise_fd_limit
from .ab import named_loads
from .load import Load, WrkResult, run_wrk
from .servers import SERVERS, Running, Settings, running, with_pythons


def measure(load: Load, handle: Running, seconds: float, cpu: int | None) -> tuple[float, ...]:
    """req/s, and user and system microseconds per request, over the middle of a run."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        wrk = pool.submit(run_wrk, load, handle, seconds, cpu)  # re-raises in result()
        return _sample(wrk, handle, seconds)


def _sample(wrk: Future[WrkResult], handle: Running, seconds: float) -> tuple[float, ...]:
    time.sleep(seconds * 0.2)  # connections set up, the server warm
    user0, system0 = handle.cpu_seconds()
    started = time.monotonic()
    time.sleep(seconds * 0.6)
    user1, system1 = handle.cpu_seconds()
    elapsed = time.monotonic() - started
    rps = wrk.result().rps
    return rps, (user1 - user0) / elapsed / rps * 1e6, (system1 - system0) / elapsed / rps * 1e6


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.cpu", description=__doc__)
    p.add_argument("--loads", default="hello-128,upload", help="as bench.ab's (hello-128,upload)")
    p.add_argument("--servers", default="eventlet,triowsgi,triowsgi[speed]")
    p.add_argument("--runs", type=int, default=2, help="alternating repetitions (2)")
    p.add_argument("--duration", type=float, default=9.0, help="seconds per wrk run (9)")
    p.add_argument("--triowsgi-python", help="interpreter of the triowsgi row")
    p.add_argument("--speed-python", help="interpreter of the triowsgi[speed] row")
    p.add_argument("--server-cpu", type=int, default=0)
    p.add_argument("--client-cpu", type=int, default=1)
    args = p.parse_args(argv)
    names = args.servers.split(",")
    known = {server.name: server for server in SERVERS}
    if unknown := [name for name in names if name not in known]:
        p.error(f"unknown server(s) {unknown}; known: {', '.join(known)}")
    pythons = {"triowsgi": args.triowsgi_python, "triowsgi[speed]": args.speed_python}
    pythons = {k: os.path.abspath(v) for k, v in pythons.items() if v}
    # A triowsgi row given no interpreter runs this one, with whichever h11 it has.
    servers = [
        server
        if server.name in pythons or not server.h11_build
        else dataclasses.replace(server, h11_build=None)
        for server in with_pythons([known[name] for name in names], pythons)
    ]
    raise_fd_limit(4096)
    server_cpu, client_cpu = pick_cpus(args.server_cpu, args.client_cpu)
    settings = Settings(threads=4, max_connections=6000)
    rows: dict[tuple[str, str], list[tuple[float, ...]]] = {}
    for run in range(args.runs):
        order = servers if run % 2 == 0 else servers[::-1]
        for load in named_loads(args.loads.split(",")):
            for server in order:
                with running(server, settings, server_cpu) as handle:
                    rps, user, system = measure(load, handle, args.duration, client_cpu)
                rows.setdefault((load.label, server.name), []).append((rps, user, system))
                print(
                    f"run {run + 1} {load.label} {server.name}: {rps:,.0f} req/s, "
                    f"{user:.0f} us user + {system:.0f} us system per request",
                    flush=True,
                )
    print("\n| load | server | req/s | user us/request | system us/request | total |")
    print("|---|---|---|---|---|---|")
    for (label, name), found in rows.items():
        rps, user, system = (statistics.median(column) for column in zip(*found, strict=True))
        print(
            f"| {label} | {name} | {rps:,.0f} | {user:.0f} | {system:.0f} | {user + system:.0f} |"
        )


if __name__ == "__main__":
    main()
