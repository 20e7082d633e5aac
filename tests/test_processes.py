"""``triowsgi --workers N`` (triowsgi/_processes.py): N processes under gunicorn's arbiter
with triowsgi's worker class, configured from the command line's flags; ``TERM`` drains
requests in flight as under gunicorn; without gunicorn, one line says what to install.

The servers are real processes; readiness is their output lines, never a sleep.
"""

from __future__ import annotations

import http.client
import math
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from test_cli import TIMEOUT, serving
from test_shutdown import BackgroundGet

from triowsgi._cli import CLIError, gunicorn_bind
from triowsgi._processes import (
    ARBITER_GRACE_MARGIN,
    FOREVER_SECONDS,
    GUNICORN_MISSING,
    arbiter_settings,
)

pytest.importorskip("gunicorn.app.base")  # not on Windows, nor installed

PROCESS_APP = """
import gc
import os
import sys
import time
from pathlib import Path

FROZEN_AT_IMPORT = gc.get_freeze_count()  # not 0 on every interpreter


def app(environ, start_response):
    if environ["PATH_INFO"] == "/multiprocess":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [str(environ["wsgi.multiprocess"]).encode()]
    if environ["PATH_INFO"] == "/frozen":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [str(gc.get_freeze_count() > FROZEN_AT_IMPORT).encode()]
    if environ["PATH_INFO"] == "/slow":
        print(f"slow request started in {os.getpid()}", file=sys.stderr, flush=True)
        go = Path(environ["QUERY_STRING"])
        deadline = time.monotonic() + 10
        while not go.exists() and time.monotonic() < deadline:  # until the test says go
            time.sleep(0.01)
    environ["wsgi.input"].read()
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]
"""


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "procapp.py").write_text(textwrap.dedent(PROCESS_APP))
    return tmp_path


def request(port: int, method: str = "GET", body: bytes = b"", path: str = "/") -> tuple[int, str]:
    """One request on a new connection: status and body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        conn.request(method, path, body=body)
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def answering_pids(port: int, count: int) -> set[int]:
    """Pids of ``count`` processes, each seen answering a request on a new connection."""
    pids: set[int] = set()
    deadline = time.monotonic() + TIMEOUT
    while len(pids) < count and time.monotonic() < deadline:
        pids.add(int(request(port)[1]))
    assert len(pids) == count, f"only {pids} answered"
    return pids


# -- serving ------------------------------------------------------------------------------


def test_two_workers_answer_and_term_drains_a_request_in_flight(app_dir: Path) -> None:
    args = ("--workers", "2", "--bind", "127.0.0.1:0", "--graceful-timeout", "20", "procapp:app")
    with serving(*args, cwd=app_dir) as server:
        server.wait_ready()  # the second worker
        workers = answering_pids(server.port, 2)
        assert server.proc.pid not in workers  # the workers answer, not the arbiter
        # PEP 3333: several processes serve the app.
        assert request(server.port, path="/multiprocess") == (200, "True")
        # The worker that answers took the app it loaded out of the garbage collector's
        # scans (each worker loads and freezes its own).
        assert request(server.port, path="/frozen") == (200, "True")

        go = app_dir / "go"
        in_flight = BackgroundGet(f"http://127.0.0.1:{server.port}/slow?{go}")
        serving_pid = int(server.wait_for("slow request started in ").rsplit(" ", 1)[1])
        server.proc.terminate()  # TERM to the arbiter
        server.wait_for(f"({serving_pid}) wsgi exiting")
        go.touch()  # the request finishes during the shutdown

        result = in_flight.join()
        assert not isinstance(result, BaseException), result
        assert result == (200, "close", str(serving_pid).encode())
        assert server.wait_exit() == 0
    assert sum("wsgi exiting" in line for line in server.output) == 2
    assert not any("Traceback" in line for line in server.output)


VERSIONED_APP = """
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"version {version}"]
"""


def test_hup_replaces_the_workers_which_serve_the_new_code(app_dir: Path) -> None:
    (app_dir / "versioned.py").write_text(VERSIONED_APP.format(version=1))
    args = ("--workers", "2", "--bind", "127.0.0.1:0", "versioned:app")
    # No .pyc: one written in the same second as the new source could stand for it.
    with serving(*args, cwd=app_dir, env={"PYTHONDONTWRITEBYTECODE": "1"}) as server:
        assert request(server.port) == (200, "version 1")
        (app_dir / "versioned.py").write_text(VERSIONED_APP.format(version=2))
        server.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + TIMEOUT
        while request(server.port) != (200, "version 2"):  # old workers finish first
            assert time.monotonic() < deadline, "the new code is never served"
        assert server.stop() == 0


def test_flags_reach_the_workers_as_triowsgi_options(app_dir: Path) -> None:
    # gunicorn has no setting for a body limit: the worker gets the option itself.
    with serving(
        "--workers", "2", "--bind", "127.0.0.1:0", "--max-body-size", "10", "procapp:app",
        cwd=app_dir,
    ) as server:  # fmt: skip
        assert request(server.port, "POST", b"x" * 10)[0] == 200
        assert request(server.port, "POST", b"x" * 11)[0] == 413
        assert server.stop() == 0


def test_workers_1_is_the_single_process_server(app_dir: Path) -> None:
    with serving("--workers", "1", "--bind", "127.0.0.1:0", "procapp:app", cwd=app_dir) as server:
        assert int(request(server.port)[1]) == server.proc.pid
        assert request(server.port, path="/multiprocess") == (200, "False")
        assert server.stop() == 0
    assert not any("gunicorn" in line for line in server.output)


# -- mistakes -------------------------------------------------------------------------------


def test_without_gunicorn_workers_is_one_error_line(app_dir: Path) -> None:
    # gunicorn made unimportable, as in an install without the extra.
    code = "import sys; sys.modules['gunicorn'] = None; from triowsgi._cli import main; main()"
    result = subprocess.run(
        [sys.executable, "-c", code, "--workers", "2", "procapp:app"],
        cwd=app_dir,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert result.returncode == 1
    assert result.stderr == f"triowsgi: error: {GUNICORN_MISSING}\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workers", "0", "procapp:app"], "--workers must be at least 1, not 0"),
        (["--workers", "2", "procapp"], "must look like MODULE:ATTRIBUTE"),
        (["--workers", "2", "--bind", "nonsense", "procapp:app"], "expected HOST:PORT"),
        (["--workers", "2", "--bind", "fd://99", "procapp:app"], "fd://99 is not a socket"),
        (["--workers", "2", "--port", "70000", "procapp:app"], "--port must be from 0 to 65535"),
        (
            ["--workers", "2", "--bind", "127.0.0.1:70000", "procapp:app"],
            "port must be from 0 to 65535, not 70000",
        ),
    ],
    ids=["zero-workers", "bad-app", "bad-bind", "bad-fd", "port-too-big", "bind-port-too-big"],
)
def test_a_mistake_with_workers_is_one_error_line(
    app_dir: Path, args: list[str], message: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "triowsgi", *args],
        cwd=app_dir,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("triowsgi: error: ")
    assert message in result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr


# -- the arbiter's settings -------------------------------------------------------------------


def test_arbiter_settings_from_the_flags() -> None:
    settings = arbiter_settings(
        workers=3,
        binds=["127.0.0.1:8000", "unix:/run/app.sock"],
        certfile="cert.pem",
        keyfile="key.pem",
        graceful_timeout=5,
        log_level="debug",
        access_log=False,
    )
    assert settings["workers"] == 3
    assert settings["worker_class"] == "triowsgi.gunicorn.Worker"
    assert settings["bind"] == ["127.0.0.1:8000", "unix:/run/app.sock"]
    assert (settings["certfile"], settings["keyfile"]) == ("cert.pem", "key.pem")
    # The workers' grace period ends first; the arbiter's SIGKILL comes after it.
    assert settings["graceful_timeout"] == 5 + ARBITER_GRACE_MARGIN
    assert settings["loglevel"] == "debug"
    assert settings["accesslog"] is None

    defaults = arbiter_settings(
        workers=2,
        binds=["127.0.0.1:8090"],
        certfile=None,
        keyfile=None,
        graceful_timeout=None,
        log_level="info",
        access_log=True,
    )
    assert defaults["graceful_timeout"] == 30 + ARBITER_GRACE_MARGIN
    forever = arbiter_settings(
        workers=2,
        binds=["127.0.0.1:8090"],
        certfile=None,
        keyfile=None,
        graceful_timeout=math.inf,  # --graceful-timeout inf: gunicorn takes whole seconds
        log_level="info",
        access_log=True,
    )
    assert forever["graceful_timeout"] == FOREVER_SECONDS
    assert defaults["accesslog"] == "-"
    assert "certfile" not in defaults


@pytest.mark.parametrize(
    ("bind", "expected"),
    [
        ("0.0.0.0:8000", "0.0.0.0:8000"),
        (":8000", "127.0.0.1:8000"),  # an empty host means what it means without --workers
        ("[::]:8000", "[::]:8000"),
        ("[::1]:8000", "[::1]:8000"),
        ("unix:/run/app.sock", "unix:/run/app.sock"),
    ],
)
def test_binds_as_gunicorn_says_them(bind: str, expected: str) -> None:
    assert gunicorn_bind(bind) == expected


def test_a_malformed_bind_is_refused_before_gunicorn_sees_it() -> None:
    with pytest.raises(CLIError, match="expected HOST:PORT"):
        gunicorn_bind("localhost")
