"""The server: listeners, the accept loop, one task per connection, and the entry points
:func:`serve`, :func:`serve_listeners` and eventlet's blocking :func:`server`."""

from __future__ import annotations

import errno
import functools
import os
import socket
import ssl
from typing import Any, Final, final

import trio

from ._compiled import COMPILED
from ._config import Config, check_port
from ._connection import ConnectionStats, HTTPConnection
from ._h11 import BUILD as H11_BUILD
from ._h11 import VERSION as H11_VERSION
from ._logging import ServerLog, pid_prefix
from ._proxy import TrustedProxies
from ._shutdown import FIRST_REQUEST_GRACE, Phase, Shutdown
from ._signals import Stop, serve_until_signalled
from ._slots import Slots
from ._workers import WorkerPool
from ._wsgi import WSGIApp

__all__ = ["ServerHandle", "serve", "serve_listeners", "server"]

# Running out of file descriptors or memory is a passing condition on a busy server:
# wait and accept again rather than crash (as trio.serve_listeners does).
ACCEPT_CAPACITY_ERRNOS: Final = frozenset(
    {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
)
ACCEPT_CAPACITY_ERROR_SLEEP: Final = 0.1
# Connections taken from the backlog per scheduler turn, after an awaited accept().
ACCEPT_BATCH: Final = 128
# Every connection task's name: one string, where trio would format one per task.
TASK_NAME: Final = "triowsgi connection"
# eventlet.wsgi.server's parameters after (sock, site), in its order: server() takes
# them by position too. protocol and server_event are not supported (Config says what
# replaces them); by position, None stands for "not given" so later ones can be reached.
EVENTLET_POSITIONAL: Final = (
    "log",
    "environ",
    "max_size",
    "max_http_version",
    "protocol",
    "server_event",
    "minimum_chunk_size",
    "log_x_forwarded_for",
    "custom_pool",
    "keepalive",
    "log_output",
    "log_format",
    "url_length_limit",
    "debug",
    "socket_timeout",
    "capitalize_response_headers",
)
_PLACEHOLDERS: Final = frozenset({"protocol", "server_event"})
# A client that went away between connect() and accept(): skip it, as trio does.
ACCEPT_SKIP_ERRNOS: Final = frozenset(
    {errno.ECONNABORTED, errno.EPROTO, getattr(errno, "ENOTCONN", errno.ECONNABORTED)}
)


@final
class ServerHandle:
    """What ``await nursery.start(triowsgi.serve, app, 0)`` returns: where the server
    listens, and live counters."""

    def __init__(
        self, listeners: list[trio.abc.Listener[Any]], stats: ConnectionStats, slots: Slots
    ):
        self.listeners = listeners
        self._stats = stats
        self._slots = slots

    @property
    def sockets(self) -> list[trio.socket.SocketType]:
        """The listening sockets (for TLS listeners, the sockets under them)."""
        return [s for s in map(_listening_socket, self.listeners) if s is not None]

    @property
    def addresses(self) -> list[Any]:
        """``getsockname()`` of every listening socket: ``(host, port, ...)`` or a path."""
        return [s.getsockname() for s in self.sockets]

    @property
    def port(self) -> int:
        """The port of the first TCP listener (handy after binding port 0)."""
        for address in self.addresses:
            if isinstance(address, tuple):
                return int(address[1])
        raise RuntimeError("the server has no TCP listener")

    @property
    def open_connections(self) -> int:
        """Connections being served now, idle keep-alive ones included."""
        return self._stats.open_connections

    @property
    def requests_served(self) -> int:
        """Requests that reached the application since the server started."""
        return self._stats.requests_served

    @property
    def evictions(self) -> int:
        """Idle or silent connections closed to admit a new client when every slot
        (``max_size``, or the ``custom_pool``'s) was taken."""
        return self._slots.evictions


async def serve(
    app: WSGIApp,
    port: int = 8090,
    host: str | bytes | None = None,
    *,
    ssl_context: ssl.SSLContext | None = None,
    handle_signals: bool | None = None,
    task_status: trio.TaskStatus[ServerHandle] = trio.TASK_STATUS_IGNORED,
    **options: Any,
) -> None:
    """Serve the WSGI ``app`` on ``host``:``port`` until cancelled.

    ``host=None`` listens on every interface, IPv4 and IPv6; ``port=0`` picks a free
    port (read it from the handle). With ``ssl_context``, every connection is TLS.
    ``options`` are eventlet's (``max_size``, ``keepalive``, ``socket_timeout``, ...) and
    triowsgi's own; see :class:`triowsgi.Config`. Usable as
    ``trio.run(triowsgi.serve, app, 8090)`` or ``await nursery.start(serve, app, 0)``,
    which returns a :class:`ServerHandle`.

    Cancelling it is a graceful shutdown. When it is the whole program (the main task
    of ``trio.run``, on the main thread, with no nursery of its own open), it also
    handles SIGINT and SIGTERM: the first begins the graceful shutdown, a second ends
    the grace period at once, and then it returns. Anywhere else it leaves signals
    alone. ``handle_signals=True`` or ``False`` decides instead (True needs the main
    thread).

    Raises:
        TypeError, ValueError: an unknown option, a bad value or a port outside 0-65535,
            before binding.
        OSError: the address could not be bound.
    """
    config = Config.from_options(**options)
    check_port(port)
    listeners: list[trio.abc.Listener[Any]] = list(await trio.open_tcp_listeners(port, host=host))
    if ssl_context is not None:
        listeners = [
            trio.SSLListener(listener, ssl_context, https_compatible=True)
            for listener in listeners
        ]
    await serve_main(app, listeners, config, task_status, handle_signals)


async def serve_listeners(
    app: WSGIApp,
    listeners: list[trio.abc.Listener[Any]],
    *,
    handle_signals: bool | None = None,
    task_status: trio.TaskStatus[ServerHandle] = trio.TASK_STATUS_IGNORED,
    **options: Any,
) -> None:
    """Serve ``app`` on listeners you made (TCP, unix, ``trio.SSLListener``) until
    cancelled. The listeners are closed when it returns. Signals and options as for
    :func:`serve`."""
    config = Config.from_options(**options)
    await serve_main(app, listeners, config, task_status, handle_signals)


def server(sock: socket.socket, site: WSGIApp, *args: Any, **options: Any) -> None:
    """eventlet's ``eventlet.wsgi.server``: serve ``site`` on a bound, listening socket
    (TCP or unix; ssl-wrapped for TLS), blocking until SIGINT (Ctrl-C) or SIGTERM, which
    shut it down gracefully (a second one ends the grace period) and return. Off the
    main thread, signals cannot be received: it serves until the process ends.

    Options are taken by keyword, or by position in eventlet's order: ``log, environ,
    max_size, max_http_version, protocol, server_event, minimum_chunk_size,
    log_x_forwarded_for, custom_pool, keepalive, log_output, log_format,
    url_length_limit, debug, socket_timeout, capitalize_response_headers``. By position,
    ``protocol`` and ``server_event`` must be None (neither is supported; see
    :class:`triowsgi.Config`), and triowsgi's own options are keyword-only.

    The socket is closed when it returns. Raises as :func:`serve` for bad options, and
    TypeError for too many positional arguments or an option given twice.
    """
    options = _eventlet_options(args, options)
    config = Config.from_options(**options)  # fail before starting Trio
    ssl_context = None
    if isinstance(sock, ssl.SSLSocket):
        ssl_context = sock.context
        sock = socket.socket(sock.family, sock.type, sock.proto, fileno=sock.detach())
    listener: trio.abc.Listener[Any] = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
    if ssl_context is not None:
        listener = trio.SSLListener(listener, ssl_context, https_compatible=True)
    try:
        trio.run(serve_main, site, [listener], config, trio.TASK_STATUS_IGNORED, None)
    except BaseException as exc:
        # Ctrl-C in the moments before or after the signals are handled.
        if not _is_interrupt(exc):
            raise
    finally:
        sock.close()


def _eventlet_options(args: tuple[Any, ...], options: dict[str, Any]) -> dict[str, Any]:
    """``server()``'s positional options named, merged with its keyword ones."""
    if len(args) > len(EVENTLET_POSITIONAL):
        raise TypeError(
            f"server() takes at most {2 + len(EVENTLET_POSITIONAL)} positional arguments "
            f"(sock, site, then {', '.join(EVENTLET_POSITIONAL)}), but {2 + len(args)} "
            "were given"
        )
    merged = dict(options)
    for name, value in zip(EVENTLET_POSITIONAL, args, strict=False):
        if name in options:
            raise TypeError(f"server() got multiple values for argument {name!r}")
        if value is None and name in _PLACEHOLDERS:
            continue  # a placeholder, to reach the options after it
        merged[name] = value
    return merged


async def serve_main(
    app: WSGIApp,
    listeners: list[trio.abc.Listener[Any]],
    config: Config,
    task_status: trio.TaskStatus[ServerHandle],
    handle_signals: bool | None,
) -> Stop:
    """Every entry point's way in: :func:`_serve`, with the signals of
    :mod:`triowsgi._signals` if ``handle_signals`` (None: if it is the whole program)."""
    serve = functools.partial(_serve, app, listeners, config, task_status)
    return await serve_until_signalled(serve, ServerLog(config), handle_signals)


def _is_interrupt(exc: BaseException) -> bool:
    """Ctrl-C, possibly wrapped in the exception groups of the nurseries it crossed."""
    inner = getattr(exc, "exceptions", None)
    if inner is not None:
        return all(map(_is_interrupt, inner))
    return isinstance(exc, KeyboardInterrupt)


async def _serve(
    app: WSGIApp,
    listeners: list[trio.abc.Listener[Any]],
    config: Config,
    task_status: trio.TaskStatus[ServerHandle],
    shutdown: Shutdown | None = None,
) -> None:
    log = ServerLog(config)
    stats = ConnectionStats()
    slots = Slots(config.custom_pool or trio.CapacityLimiter(config.max_size), log)
    handle = ServerHandle(listeners, stats, slots)
    shutdown = shutdown or Shutdown()
    acceptor = _Acceptor(app, config, log, stats, shutdown, slots)
    async with trio.open_nursery() as nursery:
        connections: trio.Nursery = await nursery.start(_run_connections, shutdown, slots)
        for listener in listeners:
            nursery.start_soon(acceptor.accept_loop, listener, connections)
        for url in map(_url, listeners):
            log.info(f"{pid_prefix()} wsgi starting up on {url}")
        modules = "compiled" if COMPILED else "in plain Python"
        log.debug(
            f"{pid_prefix()} wsgi parsing HTTP with {H11_BUILD} {H11_VERSION}, "
            f"request modules {modules}"
        )
        task_status.started(handle)
        try:
            await trio.sleep_forever()
        finally:
            # Cancelled (or an accept loop failed): the accept loops are being cancelled
            # with us, and the connections are told (see _shutdown.py).
            log.info(f"{pid_prefix()} wsgi exiting")
            shutdown.begin(config.graceful_timeout)


async def _run_connections(
    shutdown: Shutdown,
    slots: Slots,
    task_status: trio.TaskStatus[trio.Nursery] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The nursery connections run in, shielded from the server's cancellation: when it
    comes, :meth:`Shutdown.begin` closes idle connections, and this bounds the rest.
    Beside them, :meth:`Slots.expire` ends waits for a request head at their deadlines,
    until no connection waits for one any more."""
    with trio.CancelScope(shield=True) as scope:
        shutdown.scope = scope
        async with trio.open_nursery() as connections:
            expiring = trio.CancelScope()
            connections.start_soon(_expire, slots, expiring)
            task_status.started(connections)
            await shutdown.begun.wait()
            scope.deadline = shutdown.deadline
            with trio.move_on_after(FIRST_REQUEST_GRACE):
                await shutdown.drained.wait()
            shutdown.abort(Phase.IDLE, Phase.READING)
            # From here on, connections only finish their requests and close.
            expiring.cancel()


async def _expire(slots: Slots, scope: trio.CancelScope) -> None:
    with scope:
        await slots.expire()


@final
class _Acceptor:
    """Accepts connections and runs each in its own task, holding a ``max_size`` slot
    from accept to close. With no slot free, a client waiting to be accepted makes the
    longest-idle connection give its slot up (:mod:`._slots`); when every connection is
    busy with a request, clients wait in the kernel's backlog."""

    def __init__(
        self,
        app: WSGIApp,
        config: Config,
        log: ServerLog,
        stats: ConnectionStats,
        shutdown: Shutdown,
        slots: Slots,
    ):
        self._app = app
        self._shutdown = shutdown
        self._config = config
        self._log = log
        self._stats = stats
        self._slots = slots
        self._workers = WorkerPool(config.threads)
        self._proxies = TrustedProxies(config.forwarded_allow_ips)  # parsed once

    async def accept_loop(self, listener: trio.abc.Listener[Any], nursery: trio.Nursery) -> None:
        listening = _listening_socket(listener)
        async with listener, _Backlog(listener) as backlog:
            while True:
                slot = object()
                await self._slots.acquire(slot, listening)
                try:
                    stream = await self._accept(listener)
                except BaseException:
                    self._slots.release(slot)
                    raise
                self._serve_connection(nursery, stream, slot)
                self._accept_waiting(backlog, nursery)

    def _accept_waiting(self, backlog: _Backlog, nursery: trio.Nursery) -> None:
        # Each await in this loop waits for a turn of Trio's scheduler, and a turn runs
        # every busy connection once: accepting one client per turn, a burst of 512
        # clients took seconds to get in. So take what is waiting now, all at once.
        for _ in range(ACCEPT_BATCH):
            slot = object()
            if not self._slots.acquire_nowait(slot):
                return
            stream = backlog.accept_nowait()
            if stream is None:
                self._slots.release(slot)
                return
            self._serve_connection(nursery, stream, slot)

    async def _accept(self, listener: trio.abc.Listener[Any]) -> trio.abc.Stream:
        while True:
            try:
                stream: trio.abc.Stream = await listener.accept()
                return stream
            except OSError as exc:
                if exc.errno not in ACCEPT_CAPACITY_ERRNOS:
                    raise
                self._log.error(
                    f"accept() failed: {os.strerror(exc.errno)}; retrying in "
                    f"{ACCEPT_CAPACITY_ERROR_SLEEP} s"
                )
                await trio.sleep(ACCEPT_CAPACITY_ERROR_SLEEP)

    def _serve_connection(
        self, nursery: trio.Nursery, stream: trio.abc.Stream, slot: object
    ) -> None:
        """Start the task of a new connection, which holds ``slot`` until it ends."""
        try:
            connection = HTTPConnection(
                stream,
                self._app,
                self._config,
                log=self._log,
                workers=self._workers,
                stats=self._stats,
                shutdown=self._shutdown,
                proxies=self._proxies,
                slots=self._slots,
                slot=slot,
            )
        except Exception as exc:
            # A bug of ours must cost this connection only, never the server.
            self._log.exception("internal error serving a connection", exc)
            self._slots.release(slot)
            nursery.start_soon(trio.aclose_forcefully, stream)
            return
        nursery.start_soon(connection.run, name=TASK_NAME)


@final
class _Backlog:
    """Connections already waiting on a plain TCP or unix listener, taken without an
    await: through a duplicate of the listening socket in non-blocking mode. Other
    listeners (TLS ones included) have none, and get one connection per accept()."""

    def __init__(self, listener: trio.abc.Listener[Any]) -> None:
        self._sock: socket.socket | None = None
        if type(listener) is trio.SocketListener:
            self._sock = socket.socket(fileno=os.dup(listener.socket.fileno()))
            self._sock.setblocking(False)

    async def __aenter__(self) -> _Backlog:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._sock is not None:
            self._sock.close()

    def accept_nowait(self) -> trio.SocketStream | None:
        """A waiting connection, or None if there is none (or no way to tell)."""
        while self._sock is not None:
            try:
                sock, _ = self._sock.accept()
            except BlockingIOError:
                return None
            except OSError as exc:
                if exc.errno in ACCEPT_SKIP_ERRNOS:
                    continue  # that client is already gone
                return None  # the awaited accept() will meet it and deal with it
            return trio.SocketStream(trio.socket.from_stdlib_socket(sock))
        return None


def _listening_socket(listener: trio.abc.Listener[Any]) -> trio.socket.SocketType | None:
    if isinstance(listener, trio.SSLListener):
        listener = listener.transport_listener
    return getattr(listener, "socket", None)


def _url(listener: trio.abc.Listener[Any]) -> str:
    scheme = "https" if isinstance(listener, trio.SSLListener) else "http"
    sock = _listening_socket(listener)
    if sock is None:
        return f"{scheme}:?"
    address = sock.getsockname()
    if not isinstance(address, tuple):
        return f"{scheme}:{address}"
    host = f"[{address[0]}]" if ":" in address[0] else address[0]
    return f"{scheme}://{host}:{address[1]}"
