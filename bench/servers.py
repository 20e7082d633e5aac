"""The servers under test: how each is started, pinned to one CPU, watched and stopped.

Every server is one process (gunicorn: a master and its one worker) started in its own
session with ``taskset``, on a fresh port on 127.0.0.1, and stopped by its process group
id when the measurement ends, whatever happened.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final

REPO: Final = Path(__file__).resolve().parent.parent
APP: Final = "bench.apps:app"
HOST: Final = "127.0.0.1"
# Listen backlog where a server lets us set it: eventlet's default (50) would drop SYNs
# when wrk opens 512 connections at once, and the 1 s SYN retry would then show up as
# latency. Linux caps it at net.core.somaxconn.
BACKLOG: Final = 2048
# Keep-alive timeout for the servers that have a short default (gunicorn 2 s, hypercorn
# 5 s): the idle scenario holds its connections for longer than that.
KEEPALIVE_SECONDS: Final = 3600
READY_TIMEOUT: Final = 30.0
STOP_TIMEOUT: Final = 5.0
TICKS: Final = os.sysconf("SC_CLK_TCK")


class ServerFailed(Exception):
    """A server did not start, or died; the message ends with its output."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """What the harness passes to every server."""

    threads: int  # the app thread pool of the thread-based peers (waitress, gunicorn)
    max_connections: int  # connection cap, raised above the idle scenario's count


@dataclasses.dataclass(frozen=True)
class Server:
    """One server under test: ``argv(port, settings)`` is its command line."""

    name: str
    packages: tuple[str, ...]  # distributions whose versions the report lists
    arguments: Callable[[int, Settings], str]  # after ``python``, space-separated
    settings_note: str
    # The h11 build the server must parse with (``triowsgi._h11.BUILD``), checked before
    # the run and in every server process; None for the peers.
    h11_build: str | None = None
    # The interpreter, and so the virtualenv, the server runs in: the harness's own for
    # the peers; each triowsgi row has its own (``nox -s bench`` makes them).
    python: str = sys.executable
    # The source tree the server runs from (its working directory and ``PYTHONPATH``):
    # this repository, or another revision's checkout in an A/B (``python -m bench.ab``).
    source: Path = REPO
    # Whether the server, as started, writes nothing per request: then output during a
    # measurement is an access log it should not be writing (see bench/__main__.py).
    # waitress warns of its task queue depth whenever requests wait for its threads, as
    # it does by default.
    quiet: bool = True

    def argv(self, port: int, settings: Settings) -> list[str]:
        return [self.python, *self.arguments(port, settings).split()]


def _eventlet(port: int, s: Settings) -> str:
    return f"-m bench.eventlet_server {port} {s.max_connections} {BACKLOG}"


def _triowsgi(port: int, s: Settings) -> str:
    return (
        f"-m triowsgi {APP} --host {HOST} --port {port} --no-access-log "
        f"--max-size {s.max_connections}"
    )


def _hypercorn(port: int, s: Settings) -> str:
    return (
        f"-m hypercorn --worker-class trio --workers 0 --bind {HOST}:{port} "
        f"--backlog {BACKLOG} --keep-alive {KEEPALIVE_SECONDS} bench.hypercorn_app:app"
    )


def _waitress(port: int, s: Settings) -> str:
    return (
        f"-m waitress --listen={HOST}:{port} --threads={s.threads} "
        f"--connection-limit={s.max_connections} --backlog={BACKLOG} --asyncore-use-poll {APP}"
    )


def _gunicorn(port: int, s: Settings) -> str:
    return (
        f"-m gunicorn --worker-class gthread --workers 1 --threads {s.threads} "
        f"--worker-connections {s.max_connections} --bind {HOST}:{port} --backlog {BACKLOG} "
        f"--keep-alive {KEEPALIVE_SECONDS} --graceful-timeout 1 {APP}"
    )


TRIOWSGI_NOTE: Final = (
    "defaults (128 threads) but no access log and `--max-size <max connections>`"
)


SERVERS: Final = (
    Server(
        "eventlet",
        ("eventlet", "greenlet"),
        _eventlet,
        "monkey-patched; `eventlet.wsgi.server(eventlet.listen(..., backlog=2048), app, "
        "log_output=False, max_size=<max connections>)` (`bench/eventlet_server.py`)",
    ),
    Server(
        "triowsgi",
        ("triowsgi", "trio", "h11"),
        _triowsgi,
        f"the default install (`pip install triowsgi`); {TRIOWSGI_NOTE}",
        h11_build="h11",
    ),
    Server(
        "triowsgi[speed]",
        ("triowsgi", "trio", "h11-mypyc"),
        _triowsgi,
        f"`pip install 'triowsgi[speed]'` (h11 compiled with mypyc); {TRIOWSGI_NOTE}",
        h11_build="h11-mypyc",
    ),
    Server(
        "hypercorn-trio",
        ("hypercorn", "trio", "h11"),
        _hypercorn,
        "Trio worker run in-process (`--workers 0`); the app is hypercorn's "
        "`TrioWSGIMiddleware` around the same WSGI app (`bench/hypercorn_app.py` says why "
        "not the bare WSGI app), Trio's default 40 threads; keep-alive 3600 s (default 5 s)",
    ),
    Server(
        "waitress",
        ("waitress",),
        _waitress,
        "<threads> threads, `--connection-limit <max connections>` (the default 100 "
        "would stall 128+ connections), `--asyncore-use-poll` (select() stops at 1024 fds)",
        quiet=False,
    ),
    Server(
        "gunicorn-gthread",
        ("gunicorn",),
        _gunicorn,
        "one gthread worker, <threads> threads, `--worker-connections <max connections>`, "
        "keep-alive 3600 s (default 2 s)",
    ),
)


def by_names(names: list[str]) -> list[Server]:
    """The servers named (in the order of :data:`SERVERS`); unknown names raise ValueError."""
    known = {server.name for server in SERVERS}
    unknown = sorted(set(names) - known)
    if unknown:
        raise ValueError(f"unknown server(s) {unknown}; known: {sorted(known)}")
    return [server for server in SERVERS if server.name in names]


def with_pythons(servers: list[Server], pythons: dict[str, str]) -> list[Server]:
    """``servers``, each named in ``pythons`` to run with that interpreter."""
    return [
        dataclasses.replace(s, python=pythons[s.name]) if s.name in pythons else s for s in servers
    ]


@dataclasses.dataclass(frozen=True)
class Install:
    """What a server's interpreter has installed, as the report lists it."""

    python: str
    python_version: str
    versions: dict[str, str | None]  # distribution: version, None when not installed
    h11_build: str | None  # what triowsgi parses with there; None when not asked
    # Whether triowsgi's request modules are compiled there (hatch_build.py); None when
    # not asked.
    compiled: bool | None = None


# Run in a server's interpreter, as the server runs (same cwd and PYTHONPATH): the
# versions of the distributions named in argv, the h11 build triowsgi picks there and
# whether its request modules are compiled.
_INSTALL_PROBE: Final = """
import importlib.metadata, json, platform, sys
versions = {}
for name in sys.argv[2:]:
    try:
        versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        versions[name] = None
build = compiled = None
if sys.argv[1] == "triowsgi":
    from triowsgi._h11 import BUILD as build
    from triowsgi._compiled import COMPILED as compiled
print(json.dumps([platform.python_version(), versions, build, compiled]))
"""


def inspect_install(server: Server) -> Install:
    """What ``server``'s interpreter holds; raises ServerFailed when its h11 build is not
    the one the server claims (a row must not measure another install than its name)."""
    ask = "triowsgi" if server.h11_build else "-"
    argv = [server.python, "-c", _INSTALL_PROBE, ask, *server.packages]
    done = subprocess.run(argv, cwd=REPO, env=_env(), capture_output=True, text=True)
    if done.returncode != 0:
        raise ServerFailed(f"{server.name}: `{server.python}` fails: {done.stderr.strip()}")
    version, versions, build, compiled = json.loads(done.stdout)
    if build != server.h11_build:
        raise ServerFailed(
            f"{server.name} must parse with {server.h11_build}, but triowsgi picks {build} "
            f"in `{server.python}`"
        )
    return Install(server.python, version, versions, build, compiled)


def pinned(cpu: int | None, argv: list[str]) -> list[str]:
    """``argv`` under ``taskset -c cpu`` (taskset execs it: the pid stays the command's)."""
    return argv if cpu is None else ["taskset", "-c", str(cpu), *argv]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@dataclasses.dataclass
class Running:
    """A started server: its pid (the process group leader) and port."""

    server: Server
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def output_bytes(self) -> int:
        """How much the server has written to its stdout and stderr so far."""
        return self.log_path.stat().st_size

    def output_tail(self, lines: int = 15) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise ServerFailed(
                f"{self.server.name} exited with status {self.process.returncode}:\n"
                f"{self.output_tail()}"
            )

    def rss_kib(self) -> int:
        """Resident memory of the server's process tree (VmRSS), in KiB."""
        return sum(map(vm_rss_kib, self.pids()))

    def pids(self) -> list[int]:
        """The server's process tree."""
        return _process_tree(self.pid)

    def cpu_seconds(self) -> tuple[float, float]:
        """User and system seconds used so far by the server's process tree."""
        user = system = 0.0
        for pid in self.pids():
            try:
                with open(f"/proc/{pid}/stat") as stat:
                    # Fields after the command (which may hold spaces) in parentheses.
                    fields = stat.read().rpartition(")")[2].split()
            except FileNotFoundError:
                continue
            user += int(fields[11]) / TICKS  # utime, field 14
            system += int(fields[12]) / TICKS  # stime, field 15
        return user, system


@contextlib.contextmanager
def running(
    server: Server,
    settings: Settings,
    cpu: int | None,
    get: Callable[[int, str, float], bytes] | None = None,
) -> Iterator[Running]:
    """Start ``server`` pinned to ``cpu``, wait until it answers, and always stop it.
    ``get(port, path, timeout)`` asks it (over TLS, say); :func:`http_get` by default."""
    port = free_port()
    with tempfile.NamedTemporaryFile(prefix=f"bench-{server.name}-", suffix=".log") as log:
        process = subprocess.Popen(
            pinned(cpu, server.argv(port, settings)),
            cwd=server.source,
            env=_env(server.source),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: gunicorn's worker goes too
        )
        handle = Running(server, process, port, Path(log.name))
        try:
            _wait_ready(handle, get or http_get)
            _check_h11_build(handle, get or http_get)
            yield handle
        finally:
            _stop(handle)


def _env(source: Path = REPO) -> dict[str, str]:
    # The source tree first on the path: every interpreter serves the working tree's
    # triowsgi and bench.apps (a virtualenv contributes the dependencies it installed).
    return {**os.environ, "PYTHONPATH": str(source), "PYTHONUNBUFFERED": "1"}


def _check_h11_build(handle: Running, get: Callable[[int, str, float], bytes]) -> None:
    """The server process itself says which h11 triowsgi parses with (``/h11`` of
    ``bench/apps.py``): it must be the build the server's name claims."""
    expected = handle.server.h11_build
    if expected is None:
        return
    response = get(handle.port, "/h11", 2.0)
    build = response.partition(b"\r\n\r\n")[2].decode(errors="replace")
    if build != expected:
        raise ServerFailed(f"{handle.server.name} parses with {build!r}, not {expected!r}")


def _wait_ready(handle: Running, get: Callable[[int, str, float], bytes]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        handle.check_alive()
        with contextlib.suppress(OSError):
            if get(handle.port, "/", 2.0).startswith(b"HTTP/1.1 200"):
                return
        time.sleep(0.05)
    raise ServerFailed(
        f"{handle.server.name} did not answer within {READY_TIMEOUT} s:\n{handle.output_tail()}"
    )


def _stop(handle: Running) -> None:
    """SIGTERM the server's process group, SIGKILL it if it lingers, and check that the
    port is closed."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(handle.pid, sig)
        try:
            handle.process.wait(STOP_TIMEOUT)
            break
        except subprocess.TimeoutExpired:
            continue
    # The group's other members (gunicorn's worker) may outlive the leader briefly.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(handle.pid, signal.SIGKILL)
    _wait_port_closed(handle.port)


def _wait_port_closed(port: int) -> None:
    deadline = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < deadline:
        try:
            socket.create_connection((HOST, port), timeout=0.5).close()
        except OSError:
            return
        time.sleep(0.05)
    print(f"warning: port {port} still accepts connections after the server stopped")


def http_get(port: int, path: str, timeout: float) -> bytes:
    """One ``GET`` on a fresh connection (``Connection: close``); the raw response."""
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nConnection: close\r\n\r\n".encode()
        )
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def _process_tree(root: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                # Field 4 of /proc/PID/stat, after the parenthesised command name.
                ppid = int(entry.joinpath("stat").read_text().rsplit(")", 1)[1].split()[1])
                parents.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(parents.get(pid, ()))
    return tree


def vm_rss_kib(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0
