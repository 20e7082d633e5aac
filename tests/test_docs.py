"""Every Python code block in README.md and docs/ runs as shown.

Each block is a program: it is run in a process of its own, in a directory that also holds
what the docs assume a reader has (``myapp.py`` with an ``app``, ``cert.pem`` and
``key.pem``), on a free port instead of the one shown. A block that serves must say it
started, answer a request and stop on SIGINT (Ctrl-C) with exit status 0. A block that is
not meant to run says so on the line before it: ``<!-- not run: why -->``.
"""

from __future__ import annotations

import http.client
import re
import signal
import ssl
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import trustme

ROOT = Path(__file__).parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
NOT_RUN = "<!-- not run:"
TIMEOUT = 10.0
STARTED = re.compile(r"wsgi starting up on (https?)://[^:]+:(\d+)")
# The ports and address the docs show; a test can't count on them being free.
SHOWN_PORTS = re.compile(r"\b(8090|8000|5000)\b")

MYAPP = """
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"Hello from myapp\\n"]
"""


def python_blocks() -> list[tuple[str, str]]:
    """``(where, code)`` of every Python block meant to run."""
    blocks = []
    for path in DOCUMENTS:
        lines = path.read_text().splitlines()
        for number, line in enumerate(lines):
            if line != "```python" or (number and lines[number - 1].startswith(NOT_RUN)):
                continue
            end = lines.index("```", number + 1)
            code = "\n".join(lines[number + 1 : end]) + "\n"
            blocks.append((f"{path.relative_to(ROOT)}:{number + 2}", code))
    return blocks


def test_the_docs_have_blocks_to_run() -> None:
    assert len(python_blocks()) >= 5


@pytest.fixture
def reader_dir(tmp_path: Path) -> Path:
    """What a reader of the docs has at hand: an app module and a certificate."""
    (tmp_path / "myapp.py").write_text(MYAPP)
    cert = trustme.CA().issue_cert("127.0.0.1", "localhost")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    return tmp_path


@pytest.mark.parametrize(
    ("where", "code"), python_blocks(), ids=[where for where, _ in python_blocks()]
)
def test_a_code_block_runs_as_shown(reader_dir: Path, where: str, code: str) -> None:
    program = SHOWN_PORTS.sub("0", code).replace('"0.0.0.0"', '"127.0.0.1"')
    process = subprocess.Popen(
        [sys.executable, "-c", program],
        cwd=reader_dir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    # Whatever happens, nothing waits on the process for longer than this.
    watchdog = threading.Timer(3 * TIMEOUT, process.kill)
    watchdog.start()
    try:
        assert process.stderr is not None
        output = ""
        while not (started := STARTED.search(output)):
            line = process.stderr.readline()
            if not line:
                break
            output += line
        if started is None:
            process.wait(TIMEOUT)
            pytest.fail(f"{where} did not start a server (exit {process.returncode}):\n{output}")
        assert request(started[1], int(started[2])).startswith("HTTP/1.1 ")
        process.send_signal(signal.SIGINT)
        output += process.communicate(timeout=TIMEOUT)[1]
    finally:
        watchdog.cancel()
        process.kill()
        process.wait()
    assert process.returncode == 0, f"{where}:\n{output}"
    assert "Traceback" not in output, f"{where}:\n{output}"


def request(scheme: str, port: int) -> str:
    """The status line of a GET / (TLS without verification: the test's certificate)."""
    if scheme == "https":
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            "127.0.0.1", port, timeout=TIMEOUT, context=context
        )
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        conn.request("GET", "/")
        response = conn.getresponse()
        response.read()
        return f"HTTP/1.1 {response.status} {response.reason}"
    finally:
        conn.close()
