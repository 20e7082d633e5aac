"""Nox sessions for triowsgi: ``nox -s tests``, ``nox -s lint`` and ``nox -s typecheck`` by
default; on request ``nox -s tests_versions`` (the suite on every supported Python this
machine has), ``nox -s tests_speed`` (the suite on the ``speed`` install, newest Python),
``nox -s fuzz`` (a long property-test run) and ``nox -s bench`` (about 25 minutes on a
quiet machine)."""

import os
from pathlib import Path

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True
# A supported Python this machine lacks is reported as skipped, not failed (nox fails
# by default when the CI variable is set): CI still passes on a machine without it.
nox.options.error_on_missing_interpreters = False

# Every Python the package supports (requires-python and the classifiers say the same).
PYTHONS = ["3.10", "3.11", "3.12", "3.13"]


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite (on the Python nox itself runs on), on the pure Python build
    (``TRIOWSGI_NO_EXTENSIONS``: what a machine without a C compiler installs); the other
    test sessions run the compiled one."""
    session.install(".[test]", env={"TRIOWSGI_NO_EXTENSIONS": "1"})
    _check_compiled(session, False)
    session.run("pytest", *session.posargs)


@nox.session(python=PYTHONS)
def tests_versions(session: nox.Session) -> None:
    """Run the test suite on each supported Python found (``python3.X`` on the PATH), with
    the request modules compiled (hatch_build.py; .ci/run makes sure of a C compiler)."""
    session.install(".[test]")
    _check_compiled(session, True)
    session.run("pytest", *session.posargs)


@nox.session(python=PYTHONS[-1])
def tests_speed(session: nox.Session) -> None:
    """Run the test suite with the ``speed`` extra (h11 compiled with mypyc) and the
    request modules compiled, on the newest supported Python."""
    session.install(".[test,speed]")
    # The extra really is installed, and triowsgi picks it: else this would pass on h11.
    check = "from triowsgi._h11 import BUILD; assert BUILD == 'h11-mypyc', BUILD"
    session.run("python", "-I", "-c", check)
    _check_compiled(session, True)
    session.run("pytest", *session.posargs)


def _check_compiled(session: nox.Session, compiled: bool) -> None:
    """Stop unless the installed triowsgi's request modules are compiled (hatch_build.py;
    .ci/run makes sure of a C compiler), or unless they are not. ``-I``: the installed
    triowsgi, not the source tree in the working directory (pytest imports the installed
    one too)."""
    check = f"from triowsgi._compiled import COMPILED; assert COMPILED is {compiled}"
    session.run("python", "-I", "-c", check)


@nox.session
def lint(session: nox.Session) -> None:
    """Check style and formatting with ruff."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """Type-check the package with mypy in strict mode."""
    session.install("mypy", "trio", "h11", "outcome", "wsproto")
    session.run("mypy", "--strict", "triowsgi")


@nox.session
def fuzz(session: nox.Session) -> None:
    """The property tests with thousands of examples each (CI runs a few dozen).

    Arguments after ``--`` go to pytest, e.g. ``nox -s fuzz -- -x``.
    """
    session.install(".[test]")
    session.env["HYPOTHESIS_PROFILE"] = "long"
    session.run("pytest", "tests/test_fuzz.py", *session.posargs)


# The servers triowsgi is compared with, and the WebSocket clients and libraries.
BENCH_PEERS = (
    "eventlet",
    "hypercorn[trio]",
    "waitress",
    "gunicorn",
    "websockets",
    "simple-websocket",
)

# The frameworks of the benchmark's Flask and Django apps (bench/flask_app.py,
# bench/djangosite/): every server's interpreter serves them.
BENCH_APPS = ("flask", "django")

# What `python hatch_build.py --inplace` needs besides triowsgi's own dependencies.
COMPILE_IN_PLACE = ("mypy", "setuptools")

# The harness's option, the virtualenv's name and what is pip-installed into it.
BENCH_INSTALLS = (
    ("--triowsgi-python", "triowsgi", "."),
    ("--speed-python", "triowsgi-speed", ".[speed]"),
)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmark triowsgi against its peers; see bench/README.md.

    Arguments after ``--`` go to the harness, e.g. ``nox -s bench -- --duration 5 --runs 1
    --scenarios hello``. Without arguments, the WebSocket benchmark (``nox -s bench_ws``)
    follows.
    """
    session.install(".", *BENCH_PEERS, *BENCH_APPS, "matplotlib", *COMPILE_IN_PLACE)
    # The two triowsgi rows measure what a user installs: each runs in a virtualenv that
    # holds that install and the apps' frameworks, nothing else (the harness checks which
    # h11 each one parses with). They live inside this session's virtualenv: when nox
    # makes that one anew, they are made anew too.
    pythons = []
    for option, name, requirement in BENCH_INSTALLS:
        venv = Path(session.virtualenv.location) / "installs" / name
        python = venv / "bin" / "python"
        if not python.exists():
            session.run("python", "-m", "venv", str(venv))
        install = [str(python), "-m", "pip", "install", "--quiet", requirement, *BENCH_APPS]
        session.run(*install, external=True)
        pythons += [option, str(python)]
    # The servers run this tree's code (the harness puts it first on their path): its
    # request modules are compiled in place, as a wheel compiles them, for the run.
    compiled = not os.environ.get("TRIOWSGI_NO_EXTENSIONS")
    if compiled:
        session.run("python", "hatch_build.py", "--inplace")
    try:
        session.run("python", "-m", "bench", *pythons, *session.posargs)
        if not session.posargs:
            session.run("python", "-m", "bench.ws")
    finally:
        if compiled:
            session.run("python", "hatch_build.py", "--clean")


@nox.session
def bench_ws(session: nox.Session) -> None:
    """WebSockets: echo round trips and memory per idle WebSocket, triowsgi's two handler
    kinds against eventlet.websocket and gunicorn gthread + simple-websocket (``python -m
    bench.ws``; arguments after ``--`` go to it, e.g. ``-- --rounds 2 --idle 500``)."""
    session.install(".", *BENCH_PEERS)
    session.run("python", "-m", "bench.ws", *session.posargs)
