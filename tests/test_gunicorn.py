"""``gunicorn -k triowsgi.gunicorn.Worker``: triowsgi serving in gunicorn's worker
processes, on the sockets gunicorn's arbiter listens on, managed by the arbiter
(reload, graceful stop, immediate stop, max-requests, parent death), with TLS and
gunicorn's logging.

These tests run real gunicorn processes (plain sync tests: the clients block, and
there is no server in this process's event loop to block)."""

from __future__ import annotations

import http.client
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

gunicorn_config = pytest.importorskip("gunicorn.config")  # not on Windows, nor installed

from triowsgi import Config  # noqa: E402
from triowsgi.gunicorn import multiprocess_environ, options_from_config  # noqa: E402

# How long an external process may take to get somewhere (start, answer, exit).
PATIENCE = 10.0

APP = """
import os
import time
from pathlib import Path


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/multiprocess":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [str(environ["wsgi.multiprocess"]).encode()]
    if environ["REQUEST_METHOD"] == "POST":  # the test waits for the .reading file
        Path(path[len("/upload/"):] + ".reading").touch()
        data = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Length", str(len(str(len(data)))))])
        return [str(len(data)).encode()]
    if path.startswith("/slow/"):
        Path(path[len("/slow/"):] + ".started").touch()  # the test waits for this file
        time.sleep(float(environ["QUERY_STRING"] or 1))
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"""


class Gunicorn:
    """A gunicorn arbiter serving ``APP`` with triowsgi workers."""

    def __init__(self, proc: subprocess.Popen[bytes], log: Path, scheme: str):
        self.proc = proc
        self.log = log
        self.port = self._wait_for_port(scheme)

    def _wait_for_port(self, scheme: str) -> int:
        pattern = re.compile(rf"Listening at: {scheme}://127\.0\.0\.1:(\d+)")
        deadline = time.monotonic() + PATIENCE
        while time.monotonic() < deadline:
            match = pattern.search(self.log_text())
            if match:
                return int(match.group(1))
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        pytest.fail(f"gunicorn did not start listening:\n{self.log_text()}")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for_log(self, pattern: str) -> re.Match[str]:
        deadline = time.monotonic() + PATIENCE
        while not (match := re.search(pattern, self.log_text())):
            assert time.monotonic() < deadline, f"no {pattern!r} in:\n{self.log_text()}"
            time.sleep(0.05)
        return match

    def signal(self, signum: int) -> None:
        os.kill(self.proc.pid, signum)

    def worker_pids(self, count: int) -> set[int]:
        """Pids of ``count`` workers, each seen answering a request on a new connection."""
        pids: set[int] = set()
        deadline = time.monotonic() + PATIENCE
        while len(pids) < count and time.monotonic() < deadline:
            pids.add(int(get(self.port)[1]))
        assert len(pids) == count, f"only workers {pids} answered"
        return pids


@contextmanager
def gunicorn(tmp_path: Path, *flags: str, scheme: str = "http") -> Iterator[Gunicorn]:
    (tmp_path / "gapp.py").write_text(APP)
    log = tmp_path / "gunicorn.log"
    args = [sys.executable, "-m", "gunicorn", "-k", "triowsgi.gunicorn.Worker"]
    args += ["-b", "127.0.0.1:0", "--chdir", str(tmp_path), *flags, *_no_control_socket()]
    with log.open("wb") as out:
        proc = subprocess.Popen([*args, "gapp:app"], stdout=out, stderr=subprocess.STDOUT)
    try:
        yield Gunicorn(proc, log, scheme)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)  # its workers follow: their parent changed
        proc.wait()


def _no_control_socket() -> list[str]:
    # gunicorn >= 24 opens a control socket in $HOME, shared by every test's arbiter.
    names = {setting.name for setting in gunicorn_config.KNOWN_SETTINGS}
    return ["--no-control-socket"] if "control_socket_disable" in names else []


def get(
    port: int, path: str = "/", *, context: ssl.SSLContext | None = None
) -> tuple[int, str, str | None]:
    """GET on a new connection: status, body, and the ALPN protocol with TLS."""
    conn: http.client.HTTPConnection
    if context is None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=PATIENCE)
    else:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=PATIENCE, context=context)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read().decode()
        alpn = conn.sock.selected_alpn_protocol() if context is not None else None
        return response.status, body, alpn
    finally:
        conn.close()


# The server closed the connection without a response (see the HUP test).
DROPPED = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


def wait_for_file(path: Path) -> None:
    deadline = time.monotonic() + PATIENCE
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.02)


def refuses_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return True
    return False


# -- settings -------------------------------------------------------------------------


def test_gunicorn_settings_map_to_triowsgi_options() -> None:
    cfg = gunicorn_config.Config()
    defaults = options_from_config(cfg)
    # gunicorn's one thread would serialise requests: it means triowsgi's default.
    assert defaults["threads"] == Config().threads
    assert defaults["keepalive"] == cfg.keepalive == 2
    assert defaults["max_size"] == cfg.worker_connections
    assert defaults["url_length_limit"] == cfg.limit_request_line
    assert defaults["forwarded_allow_ips"] == tuple(cfg.forwarded_allow_ips)

    for name, value in [
        ("threads", 8),
        ("keepalive", 0),
        ("graceful_timeout", 0),
        ("limit_request_line", 0),
        ("limit_request_fields", 0),
        ("forwarded_allow_ips", "10.0.0.0/8,*"),
    ]:
        cfg.set(name, value)
    options = options_from_config(cfg)
    assert options["threads"] == 8
    assert options["keepalive"] is False  # 0 turns keep-alive off
    assert 0 < options["graceful_timeout"] < 0.1  # 0: no grace to speak of
    assert options["url_length_limit"] >= 64 * 1024  # 0: unlimited
    assert options["max_header_fields"] == 32768  # 0: gunicorn's largest
    assert options["forwarded_allow_ips"] == ("10.0.0.0/8", "*")
    for mapped in (defaults, options):
        Config.from_options(**mapped)  # triowsgi accepts what it is given


def test_several_workers_make_wsgi_multiprocess_true_unless_environ_says() -> None:
    assert multiprocess_environ(None) == {"wsgi.multiprocess": True}
    assert multiprocess_environ({"x": 1}) == {"wsgi.multiprocess": True, "x": 1}
    assert multiprocess_environ({"wsgi.multiprocess": False}) == {"wsgi.multiprocess": False}


# -- serving --------------------------------------------------------------------------


def test_every_worker_serves_and_logs_through_gunicorn(tmp_path: Path) -> None:
    with gunicorn(tmp_path, "-w", "2", "--access-logfile", "-") as server:
        pids = server.worker_pids(2)
        assert server.proc.pid not in pids  # the workers answer, not the arbiter
        assert get(server.port, "/multiprocess")[1] == "True"  # PEP 3333: several processes
        log = server.log_text()
    # triowsgi's lines go through gunicorn's handlers and formats.
    for pid in pids:
        assert re.search(rf"\[{pid}\] \[INFO\] \({pid}\) wsgi starting up on http://", log)
    assert re.search(r'127\.0\.0\.1 - - \[.*\] "GET / HTTP/1\.1" 200 \d+ ', log)


def test_without_an_access_log_there_are_no_access_lines(tmp_path: Path) -> None:
    with gunicorn(tmp_path, "-w", "1") as server:
        assert get(server.port)[0] == 200
        assert get(server.port, "/multiprocess")[1] == "False"  # one process
        server.signal(signal.SIGTERM)
        assert server.proc.wait(PATIENCE) == 0
    log = server.log_text()
    assert "wsgi exiting" in log  # the error log is on
    assert '"GET / HTTP/1.1"' not in log


def test_tls_with_gunicorn_certificate_options(tmp_path: Path) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "server.key"))
    context = ssl.create_default_context()
    ca.configure_trust(context)
    context.set_alpn_protocols(["h2", "http/1.1"])
    flags = ["--certfile", str(tmp_path / "server.pem"), "--keyfile", str(tmp_path / "server.key")]
    with gunicorn(tmp_path, "-w", "1", *flags, scheme="https") as server:
        status, body, alpn = get(server.port, context=context)
    assert (status, alpn) == (200, "http/1.1")  # never h2: triowsgi speaks HTTP/1.1
    assert int(body) != server.proc.pid


def test_slow_uploads_leave_the_worker_threads_to_other_requests(tmp_path: Path) -> None:
    """A thread waiting for a request body holds no place in ``--threads`` (as with
    ``triowsgi.serve``: tests/test_workers.py)."""
    length = 300_000  # more than the server reads before it calls the app
    # (--threads 1 is gunicorn's default, which means triowsgi's own: 128.)
    with gunicorn(tmp_path, "-w", "1", "--threads", "2") as server:
        uploads = []
        for n in range(3):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=PATIENCE)
            uploads.append(sock)
            name = tmp_path / f"upload{n}"
            head = f"POST /upload/{name} HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n"
            sock.sendall(head.encode() + b"u" * 1000)
            wait_for_file(name.with_suffix(".reading"))  # the third got a thread too
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=2)
        conn.request("GET", "/")
        assert conn.getresponse().status == 200
        conn.close()
        for sock in uploads:
            sock.sendall(b"u" * (length - 1000))
            response = b""
            while not response.endswith(str(length).encode()):
                chunk = sock.recv(4096)
                assert chunk, response
                response += chunk
            assert response.startswith(b"HTTP/1.1 200")
            sock.close()


# -- process management ---------------------------------------------------------------


def test_hup_replaces_workers_while_requests_keep_succeeding(tmp_path: Path) -> None:
    with gunicorn(tmp_path, "-w", "2", "--graceful-timeout", "5") as server:
        old = server.worker_pids(2)
        failures: list[object] = []
        dropped: list[Exception] = []
        answered: list[int] = []
        started = threading.Event()

        def client() -> None:
            deadline = time.monotonic() + PATIENCE
            # At least 200 requests, until the last 20 all came from new workers.
            while len(answered) < 200 or not old.isdisjoint(answered[-20:]):
                if time.monotonic() > deadline:
                    failures.append("old workers still answering")
                    return
                try:
                    status, body, _ = get(server.port)
                except DROPPED as exc:
                    # A connection an old worker accepted just before its shutdown must
                    # still get its request served (triowsgi._shutdown: Phase.READING).
                    dropped.append(exc)
                    continue
                except OSError as exc:  # refused: nobody was listening
                    failures.append(exc)
                    continue
                if status != 200:
                    failures.append(status)
                answered.append(int(body))
                if len(answered) == 10:
                    started.set()

        thread = threading.Thread(target=client)
        thread.start()
        try:
            assert started.wait(PATIENCE)
            server.signal(signal.SIGHUP)
        finally:
            thread.join()
    assert failures == []
    assert dropped == []
    assert len(set(answered) - old) == 2  # two new workers took over


def test_term_lets_a_request_in_flight_finish_then_exits_0(tmp_path: Path) -> None:
    with gunicorn(tmp_path, "-w", "2", "--graceful-timeout", "5") as server:
        result: list[tuple[int, str, str | None]] = []
        slow = threading.Thread(target=lambda: result.append(get(server.port, "/slow/a?1")))
        slow.start()
        try:
            wait_for_file(tmp_path / "a.started")
            server.signal(signal.SIGTERM)
            stopping = time.monotonic()
            assert server.proc.wait(PATIENCE) == 0
        finally:
            slow.join()
        assert time.monotonic() - stopping < 5  # within the grace period
    # Both workers stopped by themselves, the one still booting at the TERM included
    # (see the next test): the arbiter SIGKILLed neither.
    assert server.log_text().count("wsgi exiting") == 2
    assert result[0][0] == 200
    assert int(result[0][1]) != server.proc.pid


# A post_fork hook that holds each new worker before it installs its signal handlers,
# until the test creates the file "go".
HOLD_NEW_WORKERS = """
import os
import time


def post_fork(server, worker):
    deadline = time.monotonic() + {patience}
    while not os.path.exists({go!r}) and time.monotonic() < deadline:
        time.sleep(0.01)
"""


def test_a_worker_sent_term_while_it_boots_stops_once_booted(tmp_path: Path) -> None:
    # gunicorn#1910: until the worker installs its handlers, the arbiter's handlers it
    # inherited swallowed the signal, and the worker served on until SIGKILLed at the
    # end of the arbiter's graceful timeout.
    config = tmp_path / "hold.py"
    config.write_text(HOLD_NEW_WORKERS.format(patience=PATIENCE, go=str(tmp_path / "go")))
    with gunicorn(tmp_path, "-w", "1", "-c", str(config)) as server:
        booting = int(server.wait_for_log(r"Booting worker with pid: (\d+)")[1])
        os.kill(booting, signal.SIGTERM)  # as the arbiter's graceful stop does
        (tmp_path / "go").touch()
        server.wait_for_log(rf"\[{booting}\] \[INFO\] \({booting}\) wsgi exiting")
        server.wait_for_log(rf"Worker exiting \(pid: {booting}\)")


def test_quit_exits_without_waiting_for_requests(tmp_path: Path) -> None:
    with gunicorn(tmp_path, "-w", "1", "--graceful-timeout", "20") as server:
        result: list[object] = []

        def slow_request() -> None:
            try:
                result.append(get(server.port, "/slow/b?30"))
            except (OSError, http.client.HTTPException) as exc:
                result.append(exc)

        slow = threading.Thread(target=slow_request)
        slow.start()
        try:
            wait_for_file(tmp_path / "b.started")
            server.signal(signal.SIGQUIT)
            quitting = time.monotonic()
            assert server.proc.wait(PATIENCE) == 0
        finally:
            slow.join()
        assert time.monotonic() - quitting < 3  # neither the 30 s request nor the grace
    assert isinstance(result[0], (OSError, http.client.HTTPException))


def test_max_requests_recycles_a_worker(tmp_path: Path) -> None:
    with gunicorn(tmp_path, "-w", "1", "--max-requests", "5") as server:
        first = int(get(server.port)[1])
        served_by_first = 1
        deadline = time.monotonic() + PATIENCE
        while (pid := int(get(server.port)[1])) == first:
            served_by_first += 1
            assert time.monotonic() < deadline, "the worker was never replaced"
    assert pid != first
    assert served_by_first == 5  # one worker, requests one at a time: exactly 5
    assert "Autorestarting worker after current request." in server.log_text()


def test_workers_exit_when_the_arbiter_dies(tmp_path: Path) -> None:
    with gunicorn(tmp_path, "-w", "2") as server:
        server.worker_pids(2)
        server.signal(signal.SIGKILL)
        server.proc.wait()
        # The arbiter's listening socket died with it; the workers' copies close when
        # they notice their parent is gone and exit.
        deadline = time.monotonic() + PATIENCE
        while not refuses_connections(server.port):
            assert time.monotonic() < deadline, "orphaned workers still serving"
            time.sleep(0.05)
    assert "Parent changed, shutting down" in server.log_text()
