"""``python -m bench`` (``nox -s bench``): start every server once, measure them all in
interleaved rounds, and write ``bench/results/<date>.md`` and ``.png``. See
``bench/README.md``."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import os
import platform
import resource
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from . import files, report
from .load import IDLE_OPEN_CONCURRENCY, WRK_SCRIPT, IdleResult, Load, WrkResult, run_idle, run_wrk
from .servers import (
    REPO,
    SERVERS,
    Install,
    Running,
    Server,
    ServerFailed,
    Settings,
    by_names,
    http_get,
    inspect_install,
    pinned,
    running,
    with_pythons,
)

SCENARIOS: Final = ("flask", "django", "hello", "stream", "upload", "blocking", "file", "idle")
UPLOAD_BYTES: Final = 64 * 1024
BLOCKING_CONNECTIONS: Final = 64
FILE_CONNECTIONS: Final = 16
# The framework routes (bench/flask_app.py, bench/djangosite/): a path parameter, a query
# string and a header that the handler reads, at the connections of a busy site's proxy.
FRAMEWORK_CONNECTIONS: Final = 128
FLASK_PATH: Final = "/flask/users/42?fields=name,email&page=2"
DJANGO_PATH: Final = "/django/users/42/?page=2"
REQUEST_ID: Final = "X-Request-Id: 5f2b7c1e-bench"
# Seconds a measurement costs beyond wrk's duration (wrk's start and its connections),
# a server's start, and an idle probe's (a fresh server), for the time estimate.
OVERHEAD_SECONDS: Final = 0.3
START_SECONDS: Final = 2.0
IDLE_SECONDS: Final = 8.0
# A server that dies mid-run is started again for the next measurement, this many times.
RESTARTS: Final = 2
# Output a server may write during a measurement window; more is an access log (or
# errors) that every request pays for, and the measurement is reported as failed.
OUTPUT_ALLOWED: Final = 4096
README: Final = REPO / "bench" / "README.md"
PROJECT_README: Final = REPO / "README.md"
PORT_PLACEHOLDER: Final = 65432  # a port number that stands for {port} in the report


def loads(scenario: str, hello_connections: Sequence[int]) -> list[Load]:
    """The wrk measurements of a scenario (none for ``idle``)."""
    if scenario == "hello":
        return [Load(f"hello-{c}", "/", c) for c in hello_connections]
    framework = (FRAMEWORK_CONNECTIONS, (), False, (REQUEST_ID,))
    return {
        "flask": [Load("flask", FLASK_PATH, *framework)],
        "django": [Load("django", DJANGO_PATH, *framework)],
        "stream": [Load("stream", "/stream", 16)],
        "upload": [Load("upload", "/upload", 16, ("post", str(UPLOAD_BYTES)))],
        "blocking": [Load("blocking", "/blocking", BLOCKING_CONNECTIONS)],
        "file": [Load("file", "/file", FILE_CONNECTIONS, sample_rss=True)],
    }.get(scenario, [])


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument(
        "--duration",
        type=int,  # wrk takes whole seconds
        default=4,
        help="seconds of each measurement window (4)",
    )
    p.add_argument(
        "--rounds",
        "--runs",
        type=int,
        default=5,
        help="rounds: each measures every load on every server once (5)",
    )
    p.add_argument(
        "--idle-rounds", type=int, default=1, help="idle probes per server, fresh each (1)"
    )
    p.add_argument("--scenarios", type=_names, default=list(SCENARIOS), help=",".join(SCENARIOS))
    p.add_argument(
        "--servers",
        type=_names,
        default=[s.name for s in SERVERS],
        help=",".join(s.name for s in SERVERS),
    )
    p.add_argument("--hello-connections", type=_ints, default=[1, 128, 512], help="1,128,512")
    p.add_argument("--idle-connections", type=int, default=5000, help="(5000)")
    p.add_argument(
        "--threads",
        type=int,
        default=4,
        help="app threads of waitress and gunicorn gthread (4, waitress's default)",
    )
    p.add_argument(
        "--blocking-threads",
        type=int,
        default=BLOCKING_CONNECTIONS,
        help=f"their app threads in the blocking scenario ({BLOCKING_CONNECTIONS})",
    )
    p.add_argument(
        "--triowsgi-python",
        help="the interpreter of a virtualenv with `pip install .` for the triowsgi row "
        "(nox -s bench makes one; default: this interpreter)",
    )
    p.add_argument(
        "--speed-python",
        help="the interpreter of a virtualenv with `pip install '.[speed]'` for the "
        "triowsgi[speed] row (nox -s bench makes one; default: this interpreter)",
    )
    p.add_argument("--server-cpu", type=int, default=0, help="CPU the servers run on (0)")
    p.add_argument("--client-cpu", type=int, default=1, help="CPU wrk and the harness use (1)")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results", help="bench/results")
    p.add_argument(
        "--tag",
        default="",
        help="name the results <date>-<tag>.md/.png (a partial run beside the day's full one)",
    )
    p.add_argument(
        "--readme",
        action="store_true",
        help="also put the summary into bench/README.md and README.md (for full runs)",
    )
    args = p.parse_args(argv)
    if args.rounds < 1 or args.duration <= 0:
        p.error("--rounds must be at least 1 and --duration above 0")
    args.out = args.out.resolve()
    unknown = sorted(set(args.scenarios) - set(SCENARIOS))
    if unknown:
        p.error(f"unknown scenario(s) {unknown}; known: {', '.join(SCENARIOS)}")
    try:
        args.servers = by_names(args.servers)
    except ValueError as exc:
        p.error(str(exc))
    if args.readme:  # found missing now, not after the run
        readmes = ((README, report.README_MARKERS), (PROJECT_README, report.SUMMARY_MARKERS))
        for path, markers in readmes:
            if not all(marker in path.read_text() for marker in markers):
                p.error(f"--readme: {path} lacks the markers {' and '.join(markers)}")
    pythons = {"triowsgi": args.triowsgi_python, "triowsgi[speed]": args.speed_python}
    # Absolute (the servers start in the repository), but not resolved: a virtualenv's
    # python is a symlink to the base interpreter, which would leave the virtualenv.
    pythons = {k: os.path.abspath(v) for k, v in pythons.items() if v}
    args.servers = with_pythons(args.servers, pythons)
    return args


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _ints(text: str) -> list[int]:
    return [int(n) for n in _names(text)]


def ensure_wrk() -> None:
    """Install wrk from Debian's packages if it is missing and we may."""
    if shutil.which("wrk"):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        sys.exit("wrk is not installed: install it (Debian/Ubuntu: apt-get install wrk)")
    print("installing wrk with apt-get")
    install = ["apt-get", "install", "-y", "-q", "wrk"]
    if subprocess.run(install, check=False).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], check=True)
        subprocess.run(install, check=True)


def raise_fd_limit(needed: int) -> None:
    """Raise RLIMIT_NOFILE for the idle probe; the servers inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    try:  # root may raise the hard limit too (up to fs.nr_open)
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, max(needed, hard)))
        return
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < needed:
        print(f"warning: the fd limit is {hard}; the idle probe needs {needed}")


def pick_cpus(server_cpu: int, client_cpu: int) -> tuple[int | None, int | None]:
    """The CPUs to pin to, or (None, None) on a machine with fewer than two."""
    available = os.sched_getaffinity(0)
    if len(available) < 2:
        print("warning: fewer than 2 CPUs: server and load generator share one, unpinned")
        return None, None
    for cpu in (server_cpu, client_cpu):
        if cpu not in available:
            sys.exit(f"CPU {cpu} is not available (have {sorted(available)})")
    os.sched_setaffinity(0, {client_cpu})  # the idle probe runs in this process
    return server_cpu, client_cpu


def in_order(servers: list[Server], round_: int) -> list[Server]:
    """The servers in the order a round measures them: forwards, then backwards in the
    next round, so that every server is as often early as late."""
    return servers if round_ % 2 == 0 else servers[::-1]


def _shown(argv: list[str]) -> str:
    """A command line as the report shows it: ``python`` (the harness's interpreter), other
    interpreters relative to the repository, ``bench/wrk.lua``, ``{port}``."""
    shown = {sys.executable: "python", str(WRK_SCRIPT): "bench/wrk.lua"}
    line = shlex.join(shown.get(arg, report.shown_path(arg)) for arg in argv)
    return line.replace(str(PORT_PLACEHOLDER), "{port}")


def inspect_installs(servers: list[Server]) -> dict[str, Install]:
    """What each server's interpreter holds; exits when a triowsgi row would not measure
    the install its name claims."""
    installs = {}
    for server in servers:
        try:
            installs[server.name] = inspect_install(server)
        except ServerFailed as exc:
            sys.exit(
                f"{exc}\nRun `nox -s bench`, which makes a virtualenv for each triowsgi row, "
                "or pass --triowsgi-python / --speed-python."
            )
        if server.h11_build:
            print(f"{server.name}: {report.shown_path(server.python)}, {server.h11_build}")
    return installs


class Fleet:
    """The servers of a run, each started once (and once more with other settings where
    a scenario needs them) and kept running until the run ends; a server that died is
    started again, up to :data:`RESTARTS` times."""

    def __init__(self, stack: contextlib.ExitStack, cpu: int | None) -> None:
        self.stack = stack
        self.cpu = cpu
        self.handles: dict[str, Running] = {}  # by command line
        self.restarts: dict[str, int] = {}

    def get(self, server: Server, settings: Settings) -> Running:
        # By command line: settings a server ignores (eventlet's threads) share a process.
        key = shlex.join(server.argv(PORT_PLACEHOLDER, settings))
        handle = self.handles.get(key)
        if handle is not None and handle.process.poll() is None:
            return handle
        if handle is not None:
            self.restarts[key] = self.restarts.get(key, 0) + 1
            if self.restarts[key] > RESTARTS:
                raise ServerFailed(f"{server.name} died {RESTARTS + 1} times; not restarted")
        handle = self.stack.enter_context(running(server, settings, self.cpu))
        self.handles[key] = handle
        return handle


class Harness:
    def __init__(
        self,
        args: argparse.Namespace,
        cpus: tuple[int | None, int | None],
        installs: dict[str, Install],
    ):
        self.args = args
        self.installs = installs
        self.server_cpu, self.client_cpu = cpus
        self.settings = Settings(
            threads=args.threads, max_connections=max(1024, args.idle_connections + 1000)
        )
        # A thread-pool server serving an app that blocks is sized for it (one thread per
        # concurrent request), as its operator would; with 4 threads it would measure only
        # 4 / 50 ms = 80 req/s. More threads elsewhere cost them throughput (GIL contention).
        self.blocking_settings = dataclasses.replace(self.settings, threads=args.blocking_threads)
        self.results = report.Results([s.name for s in args.servers])
        self.loads = [load for s in args.scenarios for load in loads(s, args.hello_connections)]

    def settings_for(self, load: Load) -> Settings:
        return self.blocking_settings if load.label == "blocking" else self.settings

    def run(self) -> None:
        """Every load on every server once per round; then the idle probes."""
        if self.loads:
            with contextlib.ExitStack() as stack:
                fleet = Fleet(stack, self.server_cpu)
                self.start(fleet)
                for round_ in range(self.args.rounds):
                    self.round(fleet, round_)
        if "idle" in self.args.scenarios:
            for round_ in range(self.args.idle_rounds):
                for server in in_order(self.args.servers, round_):
                    print(f"idle round {round_ + 1}: {server.name}", flush=True)
                    self.idle(server, round_)

    def start(self, fleet: Fleet) -> None:
        """Start every server, and make one request on each load's path: the first request
        of a path imports its framework and fills its caches, which no window should pay."""
        for server in self.args.servers:
            for load in self.loads:
                try:
                    handle = fleet.get(server, self.settings_for(load))
                    http_get(handle.port, load.path, 30.0)
                except (ServerFailed, OSError) as exc:
                    self.failed(f"starting {server.name} for {load.label}: {exc}")
                    break
        print(f"started {len(fleet.handles)} server processes", flush=True)

    def round(self, fleet: Fleet, round_: int) -> None:
        total = self.args.rounds
        for load in self.loads:
            for server in in_order(self.args.servers, round_):
                print(f"[round {round_ + 1}/{total}] {load.label}: {server.name}", flush=True)
                try:
                    handle = fleet.get(server, self.settings_for(load))
                    self.wrk(load, handle, round_)
                except (ServerFailed, RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
                    self.failed(f"{load.label} round {round_ + 1}, {server.name}: {exc}")

    def failed(self, failure: str) -> None:
        print(f"    FAILED: {failure}", flush=True)
        self.results.failures.append(failure.replace("\n", " / "))

    def wrk(self, load: Load, handle: Running, round_: int) -> None:
        written = handle.output_bytes()
        result: WrkResult = run_wrk(load, handle, self.args.duration, self.client_cpu)
        written = handle.output_bytes() - written
        if written > OUTPUT_ALLOWED and handle.server.quiet:
            raise RuntimeError(
                f"the server wrote {written:,} bytes of output during the window (an access "
                f"log, or errors), not counted:\n{handle.output_tail(3)}"
            )
        self.results.add_wrk(load.label, handle.server.name, round_, result)
        print(
            f"    {result.rps:10,.0f} req/s  p50 {result.p50_ms:8.3f} ms  "
            f"p99 {result.p99_ms:8.3f} ms  CPU {result.cpu_us:6.1f} us/request  "
            f"errors {result.error_count}",
            flush=True,
        )

    def idle(self, server: Server, round_: int) -> None:
        """The idle probe, on a fresh process: memory a long-running server freed after
        the other loads would be reused by the idle connections, and hide their cost."""
        try:
            with running(server, self.settings, self.server_cpu) as handle:
                result: IdleResult = run_idle(handle, self.args.idle_connections)
        except (ServerFailed, RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
            self.failed(f"idle round {round_ + 1}, {server.name}: {exc}")
            return
        self.results.add_idle(server.name, result)
        print(
            f"    idle: {result.held}/{result.wanted} held, "
            f"{result.kib_per_connection:.1f} KiB/conn, fresh request "
            f"{result.fresh_median_ms:.1f} ms (max {result.fresh_max_ms:.1f})",
            flush=True,
        )

    def estimate_minutes(self) -> float:
        a = self.args
        windows = len(self.loads) * a.rounds * len(a.servers) * (a.duration + OVERHEAD_SECONDS)
        starts = len(a.servers) * START_SECONDS if self.loads else 0
        idle = a.idle_rounds * len(a.servers) * IDLE_SECONDS if "idle" in a.scenarios else 0
        return float(windows + starts + idle) / 60

    def info(self, date: str, started: float, load_average: tuple[float, ...]) -> report.RunInfo:
        a = self.args
        wrk = {
            load.label: _shown(load.wrk_argv(PORT_PLACEHOLDER, a.duration, self.client_cpu))
            for load in self.loads
        }
        servers = {
            s.name: _shown(pinned(self.server_cpu, s.argv(PORT_PLACEHOLDER, self.settings)))
            for s in a.servers
        }
        return report.RunInfo(
            date=date,
            duration=a.duration,
            rounds=a.rounds,
            idle_rounds=a.idle_rounds,
            idle_connections=a.idle_connections,
            server_commands=servers,
            server_notes={
                s.name: s.settings_note.replace(
                    "<threads>", f"{a.threads} ({a.blocking_threads} in `blocking`)"
                ).replace("<max connections>", str(self.settings.max_connections))
                for s in a.servers
            },
            wrk_commands=wrk,
            idle_command=(
                f"the harness's asyncio client (`bench/load.py`, on CPU {self.client_cpu}) "
                f"opens {a.idle_connections} connections, {IDLE_OPEN_CONCURRENCY} at a time, "
                "makes one `GET /` on each and holds them; RSS is read from "
                "`/proc/<pid>/status`"
                if "idle" in a.scenarios
                else ""
            ),
            started=time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)),
            elapsed_minutes=(time.time() - started) / 60,
            load_average=(load_average[0], load_average[1], load_average[2]),
            server_cpu=self.server_cpu,
            client_cpu=self.client_cpu,
        )

    def write(self, date: str, started: float, load_average: tuple[float, ...]) -> Path:
        self.args.out.mkdir(parents=True, exist_ok=True)
        name = f"{date}-{self.args.tag}" if self.args.tag else date
        md_path = self.args.out / f"{name}.md"
        png_path = self.args.out / f"{name}.png"
        title = (
            f"{date}, {report.cpu_model()}, Python {platform.python_version()}: server on one "
            f"CPU, wrk on another; medians of {self.args.rounds} rounds of "
            f"{self.args.duration:g} s (bars: interquartile range)"
        )
        drawn = report.chart(self.results, png_path, title)
        info = self.info(date, started, load_average)
        text = report.markdown(self.results, info, self.installs, png_path.name if drawn else "")
        md_path.write_text(text)
        if self.args.readme:
            md, chart = (Path(os.path.relpath(p, README.parent)) for p in (md_path, png_path))
            block = report.summary(self.results, info, self.installs, md, chart if drawn else None)
            report.update_readme(README, block)
            md, chart = (Path(os.path.relpath(p, REPO)) for p in (md_path, png_path))
            block = report.performance(
                self.results, info, self.installs, md, chart if drawn else None
            )
            report.update_readme(PROJECT_README, block, report.SUMMARY_MARKERS)
        return md_path


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    ensure_wrk()
    if "idle" in args.scenarios:
        raise_fd_limit(args.idle_connections + 1024)
    if "file" in args.scenarios:
        files.ensure_file()  # before any server reads it; then it is in the page cache
    installs = inspect_installs(args.servers)
    harness = Harness(args, pick_cpus(args.server_cpu, args.client_cpu), installs)
    load_average = os.getloadavg()
    if load_average[0] > 0.5:
        print(f"warning: load average {load_average[0]:.2f}: other work will add noise")
    print(f"estimated time: {harness.estimate_minutes():.0f} min", flush=True)
    started = time.time()
    date = datetime.date.today().isoformat()
    try:
        harness.run()
    except KeyboardInterrupt:
        print("interrupted: writing the results measured so far")
    path = harness.write(date, started, load_average)
    print(f"\nwrote {path} (and its chart)\n")
    if harness.results.loads:
        print("\n".join(report.throughput_table(harness.results)))
    if harness.results.idle:
        print("\n".join(report.idle_table(harness.results)))


if __name__ == "__main__":
    main()
