"""The load: ``wrk`` runs for the throughput scenarios, and the idle-connection probe.

wrk reports through ``bench/wrk.lua``'s ``done()`` as one JSON line. The idle probe runs in
this process (pinned to the client CPU) with asyncio: it opens the connections, makes one
request on each so that they are keep-alive connections the server has served, then holds
them and reads the server's RSS.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import statistics
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from .servers import HOST, Running, pinned, vm_rss_kib

RSS_INTERVAL: Final = 0.25  # seconds between two reads of the server's RSS during a load

WRK_SCRIPT: Final = Path(__file__).resolve().parent / "wrk.lua"
WRK_TIMEOUT: Final = "5s"  # a request slower than this counts as a timeout error
WRK_RESULT_PREFIX: Final = "BENCH_RESULT "
IDLE_OPEN_CONCURRENCY: Final = 200  # connections being opened at once by the idle probe
IDLE_CONNECT_TIMEOUT: Final = 15.0
IDLE_SETTLE_SECONDS: Final = 1.0  # let the server finish its bookkeeping before reading RSS
FRESH_REQUESTS: Final = 5


@dataclasses.dataclass(frozen=True)
class Load:
    """One wrk measurement of a scenario: a path at a number of connections."""

    label: str
    path: str
    connections: int
    script_args: tuple[str, ...] = ()
    sample_rss: bool = False  # read the server's RSS during the run
    headers: tuple[str, ...] = ()  # request header lines, "Name: value"

    def wrk_argv(self, port: int, seconds: float, cpu: int | None) -> list[str]:
        argv = ["wrk", "-t1", f"-c{self.connections}", f"-d{seconds:g}s", "--latency"]
        argv += ["--timeout", WRK_TIMEOUT, "-s", str(WRK_SCRIPT)]
        for header in self.headers:
            argv += ["-H", header]
        argv.append(f"http://{HOST}:{port}{self.path}")
        if self.script_args:
            argv += ["--", *self.script_args]
        return pinned(cpu, argv)


@dataclasses.dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: dict[str, int]  # connect, read, write, status (non-2xx/3xx), timeout
    rss_kib: tuple[int, int] | None = None  # the server's RSS before the run, and its peak
    # CPU seconds (user, system) the server's process tree used from just before wrk
    # started until it ended: the server does nothing else meanwhile.
    cpu_seconds: tuple[float, float] = (0.0, 0.0)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def cpu_us(self) -> float:
        """The server's CPU time (user + system) per request, in microseconds."""
        return sum(self.cpu_seconds) / max(self.requests, 1) * 1e6

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


def run_wrk(load: Load, handle: Running, seconds: float, cpu: int | None) -> WrkResult:
    """Run wrk against ``handle`` for ``seconds``; raises RuntimeError if wrk fails."""
    argv = load.wrk_argv(handle.port, seconds, cpu)
    cpu_before = handle.cpu_seconds()
    if load.sample_rss:
        done, rss = _run_sampling_rss(argv, handle, seconds + 60)
    else:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
        rss = None
    for line in done.stdout.splitlines():
        if line.startswith(WRK_RESULT_PREFIX):
            data = json.loads(line.removeprefix(WRK_RESULT_PREFIX))
            break
    else:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    handle.check_alive()  # a server that died mid-run is a failure, not a slow result
    cpu_after = handle.cpu_seconds()
    return WrkResult(
        requests=int(data["requests"]),
        seconds=data["duration_us"] / 1e6,
        p50_ms=data["p50_us"] / 1e3,
        p99_ms=data["p99_us"] / 1e3,
        errors={k: int(data[k]) for k in ("connect", "read", "write", "status", "timeout")},
        rss_kib=rss,
        cpu_seconds=(cpu_after[0] - cpu_before[0], cpu_after[1] - cpu_before[1]),
    )


def _run_sampling_rss(
    argv: list[str], handle: Running, timeout: float
) -> tuple[subprocess.CompletedProcess[str], tuple[int, int]]:
    """Run wrk, reading the server's RSS every :data:`RSS_INTERVAL` meanwhile (the
    process tree is found once: its processes don't change during a run)."""
    pids = handle.pids()
    before = peak = sum(map(vm_rss_kib, pids))
    deadline = time.monotonic() + timeout
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as wrk:
        while True:
            try:
                out, err = wrk.communicate(timeout=RSS_INTERVAL)
                break
            except subprocess.TimeoutExpired:
                peak = max(peak, sum(map(vm_rss_kib, pids)))
                if time.monotonic() > deadline:
                    wrk.kill()
                    raise
    done = subprocess.CompletedProcess(argv, wrk.returncode, out, err)
    return done, (before, peak)


@dataclasses.dataclass(frozen=True)
class IdleResult:
    wanted: int
    held: int  # connections open and answered when RSS was read
    rss_before_kib: int
    rss_after_kib: int
    fresh_ms: tuple[float, ...]  # a new connection's GET / while the others are held
    fresh_errors: int

    @property
    def kib_per_connection(self) -> float:
        return (self.rss_after_kib - self.rss_before_kib) / max(self.held, 1)

    @property
    def fresh_median_ms(self) -> float:
        return statistics.median(self.fresh_ms) if self.fresh_ms else float("nan")

    @property
    def fresh_max_ms(self) -> float:
        return max(self.fresh_ms, default=float("nan"))


def run_idle(handle: Running, connections: int) -> IdleResult:
    """Hold ``connections`` idle keep-alive connections to ``handle`` and measure."""
    return asyncio.run(_idle(handle, connections))


async def _idle(handle: Running, connections: int) -> IdleResult:
    before = handle.rss_kib()
    gate = asyncio.Semaphore(IDLE_OPEN_CONCURRENCY)
    opened = await asyncio.gather(
        *(_open_served(handle.port, gate) for _ in range(connections)), return_exceptions=True
    )
    held = [w for w in opened if isinstance(w, asyncio.StreamWriter)]
    try:
        await asyncio.sleep(IDLE_SETTLE_SECONDS)
        handle.check_alive()
        after = handle.rss_kib()
        fresh = [await _timed_get(handle.port) for _ in range(FRESH_REQUESTS)]
    finally:
        for writer in held:
            writer.transport.abort()
    times = tuple(t for t in fresh if t is not None)
    return IdleResult(
        connections, len(held), before, after, times, fresh_errors=len(fresh) - len(times)
    )


async def _open_served(port: int, gate: asyncio.Semaphore) -> asyncio.StreamWriter:
    async with gate:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(HOST, port), IDLE_CONNECT_TIMEOUT
        )
        try:
            await asyncio.wait_for(_get(reader, writer, port), IDLE_CONNECT_TIMEOUT)
        except BaseException:
            writer.transport.abort()
            raise
        return writer


async def _get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int) -> None:
    """A keep-alive ``GET /``, its response read whole (the hello app sends Content-Length)."""
    writer.write(f"GET / HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise ConnectionError(f"unexpected response {head[:40]!r}")
    await reader.readexactly(_content_length(head.decode("latin-1").split("\r\n")))


def _content_length(lines: Sequence[str]) -> int:
    for line in lines:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            return int(value)
    raise ConnectionError("response without Content-Length")


async def _timed_get(port: int) -> float | None:
    """Milliseconds from connect to the whole response of a fresh ``GET /``; None on error."""
    start = time.perf_counter()
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), 10)
        try:
            await asyncio.wait_for(_get(reader, writer, port), 10)
        finally:
            writer.transport.abort()
    except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
        return None
    return (time.perf_counter() - start) * 1e3
