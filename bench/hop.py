"""``python -m bench.hop``: what one trip from the Trio thread to a worker thread and back
costs, made one after another (the latency a request pays), on one CPU.

The app runs in a worker thread, so every request pays this trip at least once; eventlet
calls the app in the thread that read the request and pays nothing. It is what bounds
triowsgi's latency with one connection (see NOTES.md).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Awaitable, Callable

import trio

from triowsgi._workers import WorkerPool

TRIPS = 5000
ROUNDS = 5


def _nothing() -> None:
    pass


async def _per_trip(hop: Callable[[], Awaitable[None]]) -> float:
    """Median over ROUNDS of the mean microseconds per trip."""
    rounds = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        for _ in range(TRIPS):
            await hop()
        rounds.append((time.perf_counter() - started) / TRIPS * 1e6)
    return statistics.median(rounds)


async def main() -> None:
    pool = WorkerPool(8)

    async def via_pool() -> None:
        await pool.run(_nothing)

    async def via_to_thread() -> None:
        await trio.to_thread.run_sync(_nothing)

    async def no_hop() -> None:
        await trio.lowlevel.checkpoint()

    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    print(f"one trip at a time, CPUs {cpus}, median of {ROUNDS} x {TRIPS} trips:")
    print(f"  trio checkpoint only         {await _per_trip(no_hop):6.1f} us")
    print(f"  triowsgi WorkerPool.run      {await _per_trip(via_pool):6.1f} us")
    print(f"  trio.to_thread.run_sync      {await _per_trip(via_to_thread):6.1f} us")


if __name__ == "__main__":
    trio.run(main)
