"""The command line, ``triowsgi MODULE:APP`` / ``python -m triowsgi``, run as a real
subprocess: what it serves (Flask, Django, TLS, a unix socket, an inherited socket, an app
factory), how it reports mistakes, and its access log options.

These tests are synchronous: the server lives in another process, so blocking clients
are fine here. Readiness is the server's ``wsgi starting up on`` line, never a sleep.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import queue
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
from conftest import builds

import triowsgi
from triowsgi._cli import _options, _parser

TESTS_DIR = Path(__file__).parent
READY = "wsgi starting up on "
TIMEOUT = 10.0

PLAIN_APP = '''
import json
import math
import sys
import time


def app(environ, start_response):
    """Describes the request; /slow?SECONDS sleeps first."""
    if environ["PATH_INFO"] == "/slow":
        print("slow request started", file=sys.stderr, flush=True)
        time.sleep(float(environ["QUERY_STRING"] or 1))
    body = json.dumps({
        "path": environ["PATH_INFO"],
        "scheme": environ["wsgi.url_scheme"],
        "remote": environ["REMOTE_ADDR"],
    }).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


def create_app():
    """An app factory, for --factory."""
    return app
'''

FLASK_APP = """
from flask import Flask, request

app = Flask(__name__)


@app.get("/")
def index():
    return {"framework": "flask"}


@app.post("/echo")
def echo():
    return request.get_data()
"""


class CLIServer:
    """A ``python -m triowsgi`` subprocess; its output (stdout and stderr) is read line
    by line in a thread, so a test can wait for a line without sleeping."""

    def __init__(
        self,
        args: list[str],
        cwd: Path,
        env: dict[str, str] | None = None,
        pass_fds: tuple[int, ...] = (),
    ) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "triowsgi", *args],
            cwd=cwd,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            pass_fds=pass_fds,
        )
        self.output: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def wait_for(self, text: str, timeout: float = TIMEOUT) -> str:
        """The next output line containing ``text``."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(deadline - time.monotonic(), 0))
            except queue.Empty:
                raise AssertionError(f"no {text!r} within {timeout} s: {self.output}") from None
            if line is None:
                raise AssertionError(f"exited before printing {text!r}: {self.output}")
            self.output.append(line)
            if text in line:
                return line

    def wait_ready(self) -> str:
        """The address the server listens on, from its start-up line."""
        return self.wait_for(READY).split(READY, 1)[1]

    @property
    def port(self) -> int:
        match = re.search(r":(\d+)$", next(x for x in self.output if READY in x))
        assert match is not None
        return int(match.group(1))

    def stop(self) -> int:
        """SIGTERM, then the exit status; the rest of the output is in ``output``."""
        self.proc.send_signal(signal.SIGTERM)
        return self.wait_exit()

    def wait_exit(self, timeout: float = TIMEOUT) -> int:
        status = self.proc.wait(timeout)
        self._reader.join(timeout)
        while (line := self._lines.get_nowait()) is not None:
            self.output.append(line)
        return status


@contextlib.contextmanager
def serving(
    *args: str,
    cwd: Path,
    env: dict[str, str] | None = None,
    pass_fds: tuple[int, ...] = (),
) -> Iterator[CLIServer]:
    """A started CLI server (ready to accept); killed if the test left it running."""
    server = CLIServer(list(args), cwd, env, pass_fds)
    try:
        server.wait_ready()
        yield server
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait(TIMEOUT)


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """A CLI run expected to end by itself."""
    return subprocess.run(
        [sys.executable, "-m", "triowsgi", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    """A directory holding ``plainapp.py`` and ``flaskapp.py``."""
    (tmp_path / "plainapp.py").write_text(textwrap.dedent(PLAIN_APP))
    (tmp_path / "flaskapp.py").write_text(textwrap.dedent(FLASK_APP))
    return tmp_path


def get_json(url: str, **kwargs: Any) -> Any:
    with urllib.request.urlopen(url, timeout=TIMEOUT, **kwargs) as response:
        assert response.status == 200
        return json.load(response)


# -- what it serves -------------------------------------------------------------------


def test_serves_a_flask_app_over_http(app_dir: Path) -> None:
    with serving("--bind", "127.0.0.1:0", "flaskapp:app", cwd=app_dir) as server:
        base = f"http://127.0.0.1:{server.port}"
        with httpx.Client(base_url=base, timeout=TIMEOUT) as client:
            assert client.get("/").json() == {"framework": "flask"}
            posted = client.post("/echo", content=b"payload " * 1000)
        assert posted.status_code == 200
        assert posted.content == b"payload " * 1000
        assert server.stop() == 0
    assert any('"GET / HTTP/1.1" 200' in line for line in server.output)


def test_serves_a_django_project(app_dir: Path) -> None:
    with serving(
        "--bind",
        "127.0.0.1:0",
        "djangoapp.wsgi:application",
        cwd=TESTS_DIR,
        env={"DJANGO_SETTINGS_MODULE": "djangoapp.settings"},
    ) as server:
        base = f"http://127.0.0.1:{server.port}"
        with httpx.Client(base_url=base, timeout=TIMEOUT) as client:
            hello = client.get("/hello/")
            echo = client.post("/echo/", content=b"form=data&x=1")
        assert hello.json() == {"framework": "django", "path": "/hello/"}
        assert hello.headers["content-type"] == "application/json"
        assert echo.json() == {"method": "POST", "body": "form=data&x=1"}
        assert server.stop() == 0


def test_serves_https_with_certfile_and_keyfile(app_dir: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    certfile, keyfile = app_dir / "cert.pem", app_dir / "key.pem"
    certfile.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    cert.private_key_pem.write_to_path(str(keyfile))
    args = ("--certfile", str(certfile), "--keyfile", str(keyfile))
    with serving("--bind", "127.0.0.1:0", *args, "plainapp:app", cwd=app_dir) as server:
        assert server.output[-1].endswith(f"https://127.0.0.1:{server.port}")
        context = ssl.create_default_context()
        ca.configure_trust(context)
        data = get_json(f"https://127.0.0.1:{server.port}/tls", context=context)
        assert data["scheme"] == "https"
        # A client that doesn't trust the CA can't be fooled: verification is real.
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
            get_json(f"https://127.0.0.1:{server.port}/", context=ssl.create_default_context())
        assert server.stop() == 0


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a path short enough for a unix socket (108 bytes at most)."""
    path = Path(tempfile.mkdtemp(prefix="tw", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def unix_get(path: Path, target: str) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(TIMEOUT)
        sock.connect(str(path))
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        response = b""
        while data := sock.recv(65536):
            response += data
    return response


def test_serves_a_unix_socket(app_dir: Path, short_dir: Path) -> None:
    path = short_dir / "triowsgi.sock"
    with serving("--bind", f"unix:{path}", "plainapp:app", cwd=app_dir) as server:
        assert server.output[-1].endswith(str(path))
        head, _, body = unix_get(path, "/over-unix").partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        assert json.loads(body)["path"] == "/over-unix"
        assert server.stop() == 0
    assert not path.exists()  # the socket file goes with the server


def test_leaves_a_socket_file_that_replaced_its_own(app_dir: Path, short_dir: Path) -> None:
    path = short_dir / "triowsgi.sock"
    with serving("--bind", f"unix:{path}", "plainapp:app", cwd=app_dir) as server:
        path.unlink()  # someone else's server takes the path over
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as other:
            other.bind(str(path))
            other.listen()
            assert server.stop() == 0
            other.settimeout(TIMEOUT)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
                client.connect(str(path))  # still there, still the other server's


def test_replaces_a_stale_unix_socket_file(app_dir: Path, short_dir: Path) -> None:
    path = short_dir / "triowsgi.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stale:
        stale.bind(str(path))  # left behind by a server that died: nobody listens
    with serving("--bind", f"unix:{path}", "plainapp:app", cwd=app_dir) as server:
        assert unix_get(path, "/").startswith(b"HTTP/1.1 200 OK\r\n")
        assert server.stop() == 0


def test_never_deletes_a_file_that_is_not_a_socket(app_dir: Path, short_dir: Path) -> None:
    path = short_dir / "precious.txt"
    path.write_text("not a socket")
    result = run_cli("--bind", f"unix:{path}", "plainapp:app", cwd=app_dir)
    assert result.returncode != 0
    assert result.stderr.startswith(f"triowsgi: error: cannot listen on unix:{path}")
    assert path.read_text() == "not a socket"


def test_never_takes_over_a_unix_socket_in_use(app_dir: Path, short_dir: Path) -> None:
    path = short_dir / "triowsgi.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as live:
        live.bind(str(path))
        live.listen()
        result = run_cli("--bind", f"unix:{path}", "plainapp:app", cwd=app_dir)
        assert result.returncode != 0
        assert "Address already in use" in result.stderr
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(str(path))  # still the other server's socket


def test_serves_an_inherited_socket_with_fd_bind(app_dir: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        fd = sock.fileno()
        with serving(
            "--bind", f"fd://{fd}", "plainapp:app", cwd=app_dir, pass_fds=(fd,)
        ) as server:
            assert server.output[-1].endswith(f"http://127.0.0.1:{port}")
            assert get_json(f"http://127.0.0.1:{port}/inherited")["path"] == "/inherited"
            assert server.stop() == 0


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda: socket.socket(), "is a socket that is not listening"),
        (lambda: socket.socket(type=socket.SOCK_DGRAM), "is a SOCK_DGRAM socket, not a stream"),
        (lambda: open(os.devnull, "rb"), "is not a socket"),  # noqa: SIM115 (the test closes it)
    ],
    ids=["not-listening", "datagram", "not-a-socket"],
)
def test_fd_bind_of_something_else_is_one_error_line(
    app_dir: Path, make: Any, problem: str
) -> None:
    with make() as thing:
        fd = thing.fileno()
        result = subprocess.run(
            [sys.executable, "-m", "triowsgi", "--bind", f"fd://{fd}", "plainapp:app"],
            cwd=app_dir,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            pass_fds=(fd,),
        )
    assert result.returncode == 1
    assert result.stderr.startswith(f"triowsgi: error: --bind fd://{fd} {problem}")
    assert len(result.stderr.splitlines()) == 1, result.stderr


def test_factory_calls_the_attribute_to_get_the_app(app_dir: Path) -> None:
    args = ("--bind", "127.0.0.1:0", "--factory", "plainapp:create_app")
    with serving(*args, cwd=app_dir) as server:
        assert get_json(f"http://127.0.0.1:{server.port}/made")["path"] == "/made"
        assert server.stop() == 0


def test_several_binds_are_all_served(app_dir: Path, short_dir: Path) -> None:
    path = short_dir / "triowsgi.sock"
    args = ("--bind", "127.0.0.1:0", "--bind", f"unix:{path}", "plainapp:app")
    with serving(*args, cwd=app_dir) as server:
        server.wait_for(READY)  # one line per listener
        assert get_json(f"http://127.0.0.1:{server.port}/tcp")["path"] == "/tcp"
        assert unix_get(path, "/unix").startswith(b"HTTP/1.1 200 OK\r\n")
        assert server.stop() == 0


def test_keepalive_0_closes_after_each_response(app_dir: Path) -> None:
    with serving(
        "--bind", "127.0.0.1:0", "--keepalive", "0", "plainapp:app", cwd=app_dir
    ) as server:
        with httpx.Client(timeout=TIMEOUT) as client:
            response = client.get(f"http://127.0.0.1:{server.port}/")
        assert response.headers["connection"] == "close"
        assert server.stop() == 0


HEAP_APP = """
import gc
import json
import weakref

# Some interpreters start with objects frozen already (375 on Python 3.12.1).
FROZEN_AT_IMPORT = gc.get_freeze_count()


class Node:
    pass


# Garbage left by the import: a reference cycle nothing else refers to.
cycle = Node()
cycle.self = cycle
left_over = weakref.ref(cycle)
del cycle

# Made by the import and kept: the app's own long-lived objects.
kept = Node()


def app(environ, start_response):
    body = json.dumps({
        "frozen": gc.get_freeze_count() - FROZEN_AT_IMPORT,
        "kept_frozen": not any(obj is kept for obj in gc.get_objects()),
        "garbage_collected": left_over() is None,
    }).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]
"""


def test_the_loaded_app_is_taken_out_of_gc_scans(app_dir: Path) -> None:
    (app_dir / "heapapp.py").write_text(HEAP_APP)
    with serving("--bind", "127.0.0.1:0", "heapapp:app", cwd=app_dir) as server:
        heap = get_json(f"http://127.0.0.1:{server.port}/")
        assert server.stop() == 0
    assert heap["frozen"] > 0
    assert heap["kept_frozen"]
    # Collected before the freeze: garbage frozen would never be freed.
    assert heap["garbage_collected"]


def test_no_gc_freeze_leaves_the_collector_alone(app_dir: Path) -> None:
    (app_dir / "heapapp.py").write_text(HEAP_APP)
    args = ("--bind", "127.0.0.1:0", "--no-gc-freeze", "heapapp:app")
    with serving(*args, cwd=app_dir) as server:
        heap = get_json(f"http://127.0.0.1:{server.port}/")
        assert server.stop() == 0
    assert heap["frozen"] == 0
    assert not heap["kept_frozen"]


def test_client_limit_flags_set_the_options() -> None:
    args = _parser().parse_args(
        ["--body-timeout", "5", "--body-min-rate", "100", "--send-timeout", "inf", "a:b"]
    )
    options = _options(args)
    assert (options["body_timeout"], options["body_min_rate"]) == (5.0, 100.0)
    assert options["send_timeout"] == math.inf


# -- version and mistakes -------------------------------------------------------------


def test_version(app_dir: Path) -> None:
    result = run_cli("--version", cwd=app_dir)
    assert result.returncode == 0
    assert result.stdout == f"triowsgi {triowsgi.__version__}\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nosuchmodule:app"], "cannot import module 'nosuchmodule'"),
        (["plainapp:nosuchattr"], "has no attribute 'nosuchattr'"),
        (["plainapp"], "must look like MODULE:ATTRIBUTE"),
        (["--max-size", "0", "plainapp:app"], "--max-size must be at least 1, not 0"),
        (["--keepalive", "-1", "plainapp:app"], "--keepalive must be a positive number"),
        (["--send-timeout", "0", "plainapp:app"], "--send-timeout must be a positive number"),
        (["--max-body-size", "-1", "plainapp:app"], "--max-body-size must be at least 0"),
        (["--log-format", "%(nosuchfield)s", "plainapp:app"], "--log-format '%(nosuch"),
        (["--forwarded-allow-ips", "nope", "plainapp:app"], "--forwarded-allow-ips: "),
        (["--certfile", "/nonexistent.pem", "plainapp:app"], "cannot load the TLS certificate"),
        (["--port", "99999", "plainapp:app"], "--port must be from 0 to 65535, not 99999"),
        (["--port", "-1", "plainapp:app"], "--port must be from 0 to 65535, not -1"),
        (
            ["--bind", "127.0.0.1:99999", "plainapp:app"],
            "--bind '127.0.0.1:99999': port must be from 0 to 65535, not 99999",
        ),
        (["--bind", "nonsense", "plainapp:app"], "expected HOST:PORT"),
        (["--bind", "fd://notanumber", "plainapp:app"], "expected a file descriptor"),
        (["plainapp:json"], "is not callable"),
    ],
    ids=[
        "import-error",
        "missing-attribute",
        "no-colon",
        "max-size-0",
        "negative-keepalive",
        "zero-send-timeout",
        "negative-max-body-size",
        "bad-log-format",
        "bad-forwarded-allow-ips",
        "missing-certfile",
        "port-too-big",
        "negative-port",
        "bind-port-too-big",
        "bad-bind",
        "bad-fd",
        "not-callable",
    ],
)
def test_a_mistake_is_one_error_line_and_a_failure_status(
    app_dir: Path, args: list[str], message: str
) -> None:
    result = run_cli(*args, cwd=app_dir)
    assert result.returncode != 0
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("triowsgi: error: ")
    assert message in lines[0]


def test_a_certfile_without_its_key_says_to_give_keyfile(app_dir: Path) -> None:
    authority = trustme.CA()
    cert = authority.issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(app_dir / "cert-only.pem"))
    result = run_cli("--certfile", str(app_dir / "cert-only.pem"), "plainapp:app", cwd=app_dir)
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith("triowsgi: error: --certfile ")
    assert "holds no private key: give the key's file with --keyfile" in line


def test_max_body_size_inf_removes_the_limit() -> None:
    options = _options(_parser().parse_args(["--max-body-size", "inf", "a:b"]))
    assert triowsgi.Config.from_options(**options).max_body_size is None
    options = _options(_parser().parse_args(["--max-body-size", "10", "a:b"]))
    assert triowsgi.Config.from_options(**options).max_body_size == 10


def test_graceful_timeout_inf_waits_for_ever() -> None:
    options = _options(_parser().parse_args(["--graceful-timeout", "inf", "a:b"]))
    assert triowsgi.Config.from_options(**options).graceful_timeout == math.inf


def test_a_value_of_the_wrong_type_is_argparses_usage_error(app_dir: Path) -> None:
    result = run_cli("--threads", "many", "plainapp:app", cwd=app_dir)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1].startswith("triowsgi: error: argument --threads")


def test_an_address_in_use_is_one_error_line(app_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("--bind", f"127.0.0.1:{port}", "plainapp:app", cwd=app_dir)
    assert result.returncode != 0
    assert result.stderr.startswith(f"triowsgi: error: cannot listen on 127.0.0.1:{port}")
    assert len(result.stderr.splitlines()) == 1, result.stderr


# -- logging ----------------------------------------------------------------------------


def test_log_format_shapes_the_access_line(app_dir: Path) -> None:
    args = ("--bind", "127.0.0.1:0", "--log-format", "%(status_code)s %(request_line)s")
    with serving(*args, "plainapp:app", cwd=app_dir) as server:
        get_json(f"http://127.0.0.1:{server.port}/logged?x=1")
        assert server.wait_for("/logged") == "200 GET /logged?x=1 HTTP/1.1"
        assert server.stop() == 0


def test_log_level_debug_shows_the_builds(app_dir: Path) -> None:
    args = ("--bind", "127.0.0.1:0", "--log-level", "debug", "plainapp:app")
    with serving(*args, cwd=app_dir) as server:
        line = server.wait_for("parsing HTTP with")
        assert line.endswith(f"wsgi parsing HTTP with {builds()}")
        assert server.stop() == 0


def test_no_access_log_silences_access_lines_only(app_dir: Path) -> None:
    args = ("--bind", "127.0.0.1:0", "--no-access-log", "plainapp:app")
    with serving(*args, cwd=app_dir) as server:
        assert get_json(f"http://127.0.0.1:{server.port}/quiet")["path"] == "/quiet"
        assert server.stop() == 0
    assert not any("/quiet" in line for line in server.output), server.output
    assert any("wsgi exiting" in line for line in server.output)  # other lines remain


def test_no_access_log_holds_when_the_app_configures_logging(app_dir: Path) -> None:
    """Django's logging setup (dictConfig, disable_existing_loggers=False) re-enables
    every logger it does not name: --no-access-log must survive it."""
    (app_dir / "configuring.py").write_text(
        "import logging.config\n"
        "import plainapp\n"
        "def app(environ, start_response):  # as Django's setup, at the first request\n"
        '    logging.config.dictConfig({"version": 1, "disable_existing_loggers": False})\n'
        "    return plainapp.app(environ, start_response)\n"
    )
    args = ("--bind", "127.0.0.1:0", "--no-access-log", "configuring:app")
    with serving(*args, cwd=app_dir) as server:
        assert get_json(f"http://127.0.0.1:{server.port}/quiet")["path"] == "/quiet"
        assert server.stop() == 0
    assert not any("/quiet" in line for line in server.output), server.output
