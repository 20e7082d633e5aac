"""``triowsgi module:app`` (and ``python -m triowsgi``): the command-line server.

Flags follow gunicorn's and uvicorn's names. SIGTERM or SIGINT starts a graceful shutdown
(listeners closed, requests in flight finish within ``--graceful-timeout``, exit 0); a
second signal ends the grace period at once (exit status 143). See triowsgi/_signals.py.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import re
import signal
import socket
import ssl
import stat
import sys
from collections.abc import Sequence
from typing import Any, Final, NoReturn

import trio

from . import __version__
from ._config import Config, check_port
from ._loading import CLIError, freeze_heap, load_app, split_spec
from ._logging import ACCESS_LOGGER, ACCESS_OFF
from ._processes import GUNICORN_MISSING, arbiter_settings, run_arbiter
from ._server import serve_main
from ._signals import Stop
from ._wsgi import WSGIApp

__all__ = ["CLIError", "main"]

DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 8090
# Exit status when the second signal cuts a graceful shutdown short (128 + SIGTERM, as
# a shell reports a process killed by it).
FORCED_EXIT_STATUS: Final = 128 + signal.SIGTERM
Listener = trio.abc.Listener[Any]


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Run the command line; never returns."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        _check_flag_port(args.port, "--port")
        binds = args.bind or [f"{args.host}:{args.port}"]
        if args.workers < 1:
            raise CLIError(f"--workers must be at least 1, not {args.workers}")
        ssl_context = _ssl_context(args.certfile, args.keyfile)
        options = _options(args)
        if args.workers > 1:
            _run_processes(args, binds, options)
        app = load_app(args.app, factory=args.factory)
        if args.gc_freeze:
            freeze_heap()
    except CLIError as exc:
        print(f"triowsgi: error: {exc}", file=sys.stderr)
        sys.exit(1)
    _configure_logging(args.log_level, access_log=args.access_log)
    try:
        stop = trio.run(_run, app, binds, ssl_context, options)
    except CLIError as exc:
        print(f"triowsgi: error: {exc}", file=sys.stderr)
        sys.exit(1)
    sys.exit(FORCED_EXIT_STATUS if stop is Stop.FORCED else 0)


def _run_processes(
    args: argparse.Namespace, binds: list[str], options: dict[str, Any]
) -> NoReturn:
    """``--workers N``: gunicorn's arbiter and N worker processes (see _processes.py)."""
    split_spec(args.app)  # the workers import the app; the shape can be checked now
    settings = arbiter_settings(
        workers=args.workers,
        binds=[gunicorn_bind(bind) for bind in binds],
        certfile=args.certfile,
        keyfile=args.keyfile,
        graceful_timeout=args.graceful_timeout,
        log_level=args.log_level,
        access_log=args.access_log,
    )
    try:
        run_arbiter(args.app, args.factory, settings, options, gc_freeze=args.gc_freeze)
    except ImportError as exc:
        if exc.name != "gunicorn" and not (exc.name or "").startswith("gunicorn."):
            raise
        raise CLIError(GUNICORN_MISSING) from None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="triowsgi",
        description="Serve a WSGI application over HTTP/1.1 with triowsgi.",
        epilog="Example: triowsgi --bind 0.0.0.0:8000 --threads 64 myproject.wsgi:application",
    )
    p.add_argument("app", help="the WSGI app as MODULE:ATTRIBUTE (e.g. myapp:app)")
    p.add_argument("--version", action="version", version=f"triowsgi {__version__}")
    add = p.add_argument
    add(
        "-b",
        "--bind",
        action="append",
        metavar="ADDRESS",
        help="HOST:PORT, [::]:PORT, unix:PATH or fd://N; repeatable (default: --host:--port)",
    )
    add("--host", default=DEFAULT_HOST, help=f"host to bind (default {DEFAULT_HOST})")
    add("--port", type=int, default=DEFAULT_PORT, help=f"port to bind (default {DEFAULT_PORT})")
    add("--factory", action="store_true", help="MODULE:ATTRIBUTE is a callable returning the app")
    add(
        "-w",
        "--workers",
        type=int,
        default=1,
        help="processes, under gunicorn's arbiter when more than 1 (needs triowsgi[gunicorn])",
    )
    add("--certfile", help="TLS certificate (PEM); serves HTTPS with --keyfile")
    add("--keyfile", help="TLS private key (PEM)")
    add("--threads", type=int, help="worker threads for the app (default 128)")
    add("--max-size", type=int, help="connections served at once (default 1024)")
    add(
        "--keepalive",
        type=float,
        help="seconds a keep-alive connection may idle; 0 disables keep-alive, inf keeps "
        "idle connections for ever (default 75)",
    )
    add("--socket-timeout", type=float, help="seconds any wait on a client may take")
    add(
        "--header-timeout",
        type=float,
        help="seconds to receive a request head, the first from the accept (default 20)",
    )
    add(
        "--body-timeout",
        type=float,
        help="seconds a request body may keep the server waiting, plus 1 per "
        "--body-min-rate bytes received (default 20; inf: no limit)",
    )
    add(
        "--body-min-rate",
        type=float,
        help="bytes per second that extend --body-timeout by 1 s (default 500)",
    )
    add(
        "--send-timeout",
        type=float,
        help="seconds a response write may make no progress (default 60; inf: no limit)",
    )
    add(
        "--max-body-size",
        type=_size,
        help="largest request body in bytes (default 1 GiB; inf: no limit)",
    )
    add("--max-header-bytes", type=int, help="largest request head in bytes (default 65536)")
    add("--url-length-limit", type=int, help="longest request target (default 8192)")
    add(
        "--graceful-timeout",
        type=float,
        help="seconds requests in flight get at shutdown (default 30)",
    )
    add(
        "--forwarded-allow-ips",
        metavar="IPS",
        help="comma-separated proxies trusted for X-Forwarded-For/-Proto ('*' for any)",
    )
    add(
        "--access-log",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="log one line per request (default on)",
    )
    add("--log-format", help="access log format (eventlet's %%-style fields)")
    add(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug"],
        help="default info",
    )
    add(
        "--gc-freeze",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="once the app is loaded, take it out of the garbage collector's scans "
        "(gc.freeze(); default on)",
    )
    add("--debug", action="store_true", help="send tracebacks in 500 responses")
    return p


def _size(text: str) -> float:
    """A ``--max-body-size``: a whole number of bytes, or ``inf`` for no limit."""
    if text.strip().lower() in ("inf", "infinity"):
        return math.inf
    return int(text)


def _check_flag_port(port: int, flag: str) -> int:
    try:
        return check_port(port, flag)
    except (TypeError, ValueError) as exc:
        raise CLIError(str(exc)) from None


def _ssl_context(certfile: str | None, keyfile: str | None) -> ssl.SSLContext | None:
    if certfile is None:
        if keyfile is not None:
            raise CLIError("--keyfile needs --certfile")
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(certfile, keyfile)
    except ssl.SSLError as exc:
        raise CLIError(_tls_problem(certfile, keyfile, exc)) from None
    except OSError as exc:
        raise CLIError(f"cannot load the TLS certificate {certfile!r}: {exc}") from None
    return context


def _tls_problem(certfile: str, keyfile: str | None, exc: ssl.SSLError) -> str:
    """What is wrong with ``--certfile``/``--keyfile``, beyond OpenSSL's "PEM lib"."""
    if keyfile is None and not _holds_private_key(certfile):
        return (
            f"--certfile {certfile!r} holds no private key: give the key's file with "
            f"--keyfile ({exc})"
        )
    files = f"--certfile {certfile!r}" + (f" and --keyfile {keyfile!r}" if keyfile else "")
    return (
        f"cannot load the TLS certificate from {files}: expected a PEM certificate "
        f"(chain) and the private key that matches it ({exc})"
    )


def _holds_private_key(path: str) -> bool:
    try:
        with open(path, "rb") as file:
            return b"PRIVATE KEY-----" in file.read()
    except OSError:
        return False


_FLAG_OPTIONS: Final = (
    "threads",
    "max_size",
    "socket_timeout",
    "header_timeout",
    "body_timeout",
    "body_min_rate",
    "send_timeout",
    "max_body_size",
    "max_header_bytes",
    "url_length_limit",
    "graceful_timeout",
    "forwarded_allow_ips",
    "log_format",
)


def _options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {
        name: getattr(args, name) for name in _FLAG_OPTIONS if getattr(args, name) is not None
    }
    if args.keepalive is not None:
        # Config turns 0 into "off" and rejects a negative number (not "off" as well).
        options["keepalive"] = args.keepalive
    if args.debug:
        options["debug"] = True
    for name, value in options.items():  # one at a time: the error names the flag
        try:
            Config.from_options(**{name: value})
        except (TypeError, ValueError) as exc:
            raise CLIError(_flag_error(name, str(exc))) from None
    try:
        Config.from_options(**options)
    except (TypeError, ValueError) as exc:
        raise CLIError(str(exc)) from None
    return options


def _flag_error(option: str, message: str) -> str:
    """Config's ``message`` about ``option``, naming the flag the user typed instead."""
    flag = "--" + option.replace("_", "-")
    return re.sub(rf"\b{option}\b", flag, message, count=1)


def _configure_logging(level: str, *, access_log: bool) -> None:
    logging.basicConfig(level=level.upper(), format="%(message)s", stream=sys.stderr)
    if not access_log:
        logging.getLogger(ACCESS_LOGGER).setLevel(ACCESS_OFF)


async def _run(
    app: WSGIApp, binds: list[str], ssl_context: ssl.SSLContext | None, options: dict[str, Any]
) -> Stop:
    with contextlib.ExitStack() as socket_files:  # removed on the way out
        listeners: list[Listener] = []
        for bind in binds:
            listeners += await open_listeners(bind, socket_files)
        if ssl_context is not None:
            listeners = [
                trio.SSLListener(lst, ssl_context, https_compatible=True) for lst in listeners
            ]
        config = Config.from_options(**options)
        return await serve_main(app, listeners, config, trio.TASK_STATUS_IGNORED, True)


async def open_listeners(bind: str, socket_files: contextlib.ExitStack) -> list[Listener]:
    """Listeners for one ``--bind`` value: ``HOST:PORT``, ``[V6]:PORT``, ``unix:PATH`` or
    ``fd://N`` (an inherited listening socket, e.g. from systemd). A unix socket's file
    is removed when ``socket_files`` closes, if it is still the one made here."""
    if bind.startswith("unix:"):
        return [await _unix_listener(bind[len("unix:") :], socket_files)]
    if bind.startswith("fd://"):
        return [_fd_listener(bind[len("fd://") :])]
    host, port = _host_and_port(bind)
    try:
        return list(await trio.open_tcp_listeners(port, host=host))
    except OSError as exc:
        raise CLIError(f"cannot listen on {bind}: {exc.strerror or exc}") from None


def gunicorn_bind(bind: str) -> str:
    """``bind`` as gunicorn's ``--bind`` says it (an empty host is 127.0.0.1 here), or
    the CLIError :func:`open_listeners` would raise for it (the arbiter would print a
    traceback)."""
    if bind.startswith("fd://"):
        inherited_socket(bind[len("fd://") :]).detach()
        return bind
    if bind.startswith("unix:"):
        return bind
    host, port = _host_and_port(bind)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _host_and_port(bind: str) -> tuple[str, int]:
    host, sep, port = bind.rpartition(":")
    if not sep or not port.isdigit():
        raise CLIError(f"--bind {bind!r}: expected HOST:PORT, [::]:PORT, unix:PATH or fd://N")
    return host.strip("[]") or DEFAULT_HOST, _check_flag_port(int(port), f"--bind {bind!r}: port")


async def _unix_listener(path: str, socket_files: contextlib.ExitStack) -> Listener:
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        if _is_stale_socket(path):
            os.unlink(path)  # left by a previous run; anything else is never deleted
        await sock.bind(path)
        socket_files.callback(_remove_if_same, path, os.stat(path))
        sock.listen(socket.SOMAXCONN)
    except OSError as exc:
        sock.close()
        raise CLIError(f"cannot listen on unix:{path}: {exc.strerror or exc}") from None
    return trio.SocketListener(sock)


def _remove_if_same(path: str, made: os.stat_result) -> None:
    """Remove the socket file ``made`` at ``path``, unless something replaced it since
    (another server that took the path over, a file the user put there)."""
    try:
        now = os.stat(path)
    except OSError:
        return
    if (now.st_dev, now.st_ino) == (made.st_dev, made.st_ino):
        os.unlink(path)


def _is_stale_socket(path: str) -> bool:
    """A socket file nobody listens on."""
    try:
        if not stat.S_ISSOCK(os.stat(path).st_mode):
            return False
    except OSError:
        return False
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        return True
    finally:
        probe.close()
    return False


def _fd_listener(number: str) -> Listener:
    sock = inherited_socket(number)
    sock.setblocking(False)
    return trio.SocketListener(trio.socket.from_stdlib_socket(sock))


def inherited_socket(number: str) -> socket.socket:
    """The listening stream socket that ``--bind fd://NUMBER`` names, or a CLIError
    that says what is wrong with it."""
    if not number.isdigit():
        raise CLIError(f"--bind fd://{number}: expected a file descriptor number")
    try:
        sock = socket.socket(fileno=int(number))
    except OSError as exc:
        raise CLIError(f"--bind fd://{number} is not a socket: {exc.strerror or exc}") from None
    problem = None
    if sock.type != socket.SOCK_STREAM:
        problem = f"is a {sock.type.name} socket, not a stream socket (SOCK_STREAM)"
    elif not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        problem = "is a socket that is not listening (call listen() before passing it on)"
    if problem is not None:
        sock.detach()  # the descriptor is the caller's
        raise CLIError(f"--bind fd://{number} {problem}")
    return sock
