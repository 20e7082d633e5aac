"""A gunicorn worker class that serves with triowsgi.

Install ``triowsgi[gunicorn]``, then::

    gunicorn -k triowsgi.gunicorn.Worker -w 4 -b 0.0.0.0:8000 myproject.wsgi:application

(or ``triowsgi --workers 4 --bind 0.0.0.0:8000 myproject.wsgi:application``, the same
arbiter and worker configured with triowsgi's flags: see ``triowsgi/_processes.py``).

Each worker process runs one Trio event loop serving the app on the listening sockets it
inherits from gunicorn's arbiter (TCP or unix; TLS with ``--certfile``/``--keyfile``).
The arbiter manages workers as it does its own: ``HUP`` replaces them, ``TTIN``/``TTOU``
resize, ``TERM`` stops gracefully (listeners closed, requests in flight finish within
``--graceful-timeout``), ``QUIT``/``INT`` stop at once (a worker with requests still
in flight 0.1 s later exits without unwinding, so ``worker_exit`` does not run),
``--max-requests`` recycles workers. A stop signal that reaches a worker still booting
takes effect once it has booted (see ``_BootSignals``). Each worker notifies the arbiter
from its event loop, so ``--timeout`` replaces a worker whose loop is stuck; the app runs
in threads, so one slow request is not a stuck worker (``--graceful-timeout`` still
bounds requests at shutdown).

gunicorn settings that apply:

- ``-w N``/``--workers N``: with more than one, ``wsgi.multiprocess`` is True (PEP 3333).
- ``--keep-alive N``: seconds an idle keep-alive connection is kept (0: no keep-alive).
- ``--graceful-timeout N``: seconds requests in flight get after ``TERM``.
- ``--threads N``: threads running the app, i.e. requests in the app at once. gunicorn's
  default of 1 suits its sync worker but would serialise every request here, so 1 means
  triowsgi's default (``Config().threads``).
- ``--worker-connections N``: connections a worker serves at once (``max_size``).
- ``--limit-request-line N``: longest request target (0: bounded only by the 64 KiB head).
- ``--limit-request-fields N``: most header fields in a request (0: 32768).
- ``--forwarded-allow-ips``: proxies trusted for ``X-Forwarded-For``/``-Proto``
  (gunicorn's default trusts ``127.0.0.1`` and ``::1``, where triowsgi's trusts nobody).
- ``--max-requests``, ``--max-requests-jitter``, ``--timeout``: as above.
- ``--certfile``, ``--keyfile``, ``--ca-certs``, ``--cert-reqs``, ``--ciphers`` and the
  ``ssl_context`` hook. ALPN offers ``http/1.1`` only: triowsgi does not speak HTTP/2.
- ``--error-logfile``, ``--log-level``, ``--access-logfile``, syslog and logconfig: the
  ``triowsgi.error`` and ``triowsgi.access`` loggers write to gunicorn's handlers (unless
  you gave them handlers yourself). Access lines are triowsgi's (eventlet's format) and
  appear only when gunicorn's access log is enabled.
- Server hooks that gunicorn itself runs (``post_fork``, ``post_worker_init``,
  ``worker_int``, ``worker_exit``, ...).

Not applied: ``--limit-request-field_size`` (triowsgi caps each header line at 8 KiB and
the head at 64 KiB), ``--access-logformat``, ``pre_request``/``post_request``,
``secure_scheme_headers`` (only ``X-Forwarded-Proto`` from a trusted proxy counts),
``--proxy-protocol``, ``--http-protocols`` (HTTP/2). triowsgi's limits that gunicorn has no
setting for keep their defaults: ``header_timeout`` 20 s, ``body_timeout`` 20 s with
``body_min_rate`` 500 bytes/s, ``send_timeout`` 60 s, ``max_body_size`` 1 GiB. Keep-alive
follows gunicorn's ``--keep-alive`` (its default is 2 s, not triowsgi's 75 s).
"""

from __future__ import annotations

import logging
import os
import signal
import ssl
import threading
from collections.abc import AsyncIterator, Mapping
from typing import Any, Final

import trio
from gunicorn.sock import ssl_context as gunicorn_ssl_context
from gunicorn.workers.base import Worker as BaseWorker

from ._config import Config
from ._logging import ACCESS_LOGGER, ACCESS_OFF, ERROR_LOGGER
from ._server import ServerHandle, serve_listeners
from ._wsgi import WSGIApp

__all__ = ["Worker", "multiprocess_environ", "options_from_config"]

# gunicorn's --threads default; see the module docstring.
GUNICORN_DEFAULT_THREADS: Final = 1
DEFAULT_THREADS: Final = Config().threads
# gunicorn's 0 ("unlimited") for the request line: h11's head limit bounds it anyway.
UNLIMITED_REQUEST_LINE: Final = 64 * 1024
UNLIMITED_REQUEST_FIELDS: Final = 32768  # gunicorn's largest --limit-request-fields
# gunicorn allows --graceful-timeout 0; triowsgi wants a positive grace period.
MIN_GRACEFUL_TIMEOUT: Final = 0.001
# How often the worker tells the arbiter it is alive and checks whether to stop.
WATCH_INTERVAL: Final = 0.2
# After QUIT or INT, how long requests in flight may delay the exit (gunicorn's own
# workers sleep this long before exiting).
QUICK_EXIT_SECONDS: Final = 0.1
# The arbiter's signals to a worker that a booting worker must not lose (see
# _BootSignals).
STOP_SIGNALS: Final = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGQUIT})


class _BootSignals:
    """Holds the stop signals back from a new worker until its own handlers are in place.

    Between the arbiter's fork() and the worker's init_signals(), the worker still has
    the arbiter's handlers, which queue a signal for the arbiter's loop: in the worker's
    copy of the arbiter, which never runs (gunicorn#1910). A TERM that came then was lost:
    the worker booted and served on, and the arbiter's graceful stop waited its whole
    ``--graceful-timeout`` before SIGKILLing it. So the signals are blocked in the
    arbiter around the fork of a worker; the worker inherits the mask, with whatever
    arrived in the meantime pending, and unblocks it once its handlers are installed.
    """

    def __init__(self) -> None:
        self._armed = False
        self._previous_mask: set[int | signal.Signals] | None = None
        os.register_at_fork(before=self._before_fork, after_in_parent=self._restore)

    def arm(self) -> None:
        """The next fork is a worker's (the arbiter creates it just before forking)."""
        self._armed = True

    def _before_fork(self) -> None:
        if self._armed:
            self._armed = False
            self._previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)

    def _restore(self) -> None:
        """In the arbiter after the fork; in the worker once its handlers are in place."""
        if self._previous_mask is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, self._previous_mask)
            self._previous_mask = None

    release = _restore


_boot_signals = _BootSignals()


def options_from_config(cfg: Any) -> dict[str, Any]:
    """triowsgi options for a gunicorn ``Config`` (see the module docstring)."""
    return {
        "keepalive": cfg.keepalive if cfg.keepalive > 0 else False,
        "graceful_timeout": max(cfg.graceful_timeout, MIN_GRACEFUL_TIMEOUT),
        "threads": DEFAULT_THREADS if cfg.threads <= GUNICORN_DEFAULT_THREADS else cfg.threads,
        "max_size": cfg.worker_connections,
        "url_length_limit": cfg.limit_request_line or UNLIMITED_REQUEST_LINE,
        "max_header_fields": cfg.limit_request_fields or UNLIMITED_REQUEST_FIELDS,
        "forwarded_allow_ips": tuple(cfg.forwarded_allow_ips),
    }


def multiprocess_environ(environ: Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``environ`` option of a worker that is one of several processes serving the
    app: ``wsgi.multiprocess`` is True (PEP 3333), unless the user's ``environ`` says."""
    return {"wsgi.multiprocess": True, **(environ or {})}


class Worker(BaseWorker):  # type: ignore[misc]  # gunicorn has no type hints
    """``gunicorn -k triowsgi.gunicorn.Worker``: one Trio loop per worker process."""

    _quit_timer: threading.Timer | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _boot_signals.arm()

    def init_signals(self) -> None:
        super().init_signals()
        # Trio wakes its loop on signals through its own wakeup fd (and warns if one is
        # already set); TERM, QUIT and INT are handled inside the loop, see _serve.
        signal.set_wakeup_fd(-1)
        _boot_signals.release()  # a stop signal that came during the boot arrives now

    def run(self) -> None:
        # ``triowsgi --workers`` gives its flags as triowsgi options (_processes.py);
        # under gunicorn's own command they come from its settings.
        given = getattr(self.app, "triowsgi_options", None)
        options = options_from_config(self.cfg) if given is None else dict(given)
        if self.cfg.workers > 1:
            options["environ"] = multiprocess_environ(options.get("environ"))
        self._route_logs()
        try:
            trio.run(self._serve, options)
        finally:
            if self._quit_timer is not None:
                self._quit_timer.cancel()

    def _route_logs(self) -> None:
        """Send triowsgi's lines to gunicorn's log handlers."""
        access_on = getattr(self.log, "access_log_enabled", bool(self.cfg.accesslog))
        routes = (
            (ERROR_LOGGER, getattr(self.log, "error_log", None), True),
            (ACCESS_LOGGER, getattr(self.log, "access_log", None), access_on),
        )
        for name, source, enabled in routes:
            logger = logging.getLogger(name)
            if logger.handlers or source is None:
                continue  # configured by the user, or a logger_class we don't know
            # A handler even when off: without one, triowsgi would write to stderr.
            logger.handlers = list(source.handlers) if enabled else [logging.NullHandler()]
            # Off: no access line is even formatted.
            logger.setLevel(source.getEffectiveLevel() if enabled else ACCESS_OFF)
            logger.propagate = False

    async def _serve(self, options: dict[str, Any]) -> None:
        # Outermost, so that signals still pending when it closes are redelivered to
        # gunicorn's handlers outside the nursery.
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGQUIT, signal.SIGINT) as signals:
            async with trio.open_nursery() as nursery:
                serving = trio.CancelScope()

                async def run_server(task_status: trio.TaskStatus[ServerHandle]) -> None:
                    app = self._counting(self.wsgi, serving)
                    with serving:
                        await serve_listeners(
                            app,
                            self._listeners(),
                            handle_signals=False,  # gunicorn's signals, handled here
                            task_status=task_status,
                            **options,
                        )
                    nursery.cancel_scope.cancel()  # served its last request: stop watching

                await nursery.start(run_server)
                nursery.start_soon(self._watch_signals, signals, serving, nursery.cancel_scope)
                nursery.start_soon(self._watch, serving)

    def _listeners(self) -> list[trio.abc.Listener[Any]]:
        context = self._ssl_context() if self.cfg.is_ssl else None
        listeners: list[trio.abc.Listener[Any]] = []
        for sock in self.sockets:
            listener: trio.abc.Listener[Any] = trio.SocketListener(
                trio.socket.from_stdlib_socket(sock.sock)
            )
            if context is not None:
                listener = trio.SSLListener(listener, context, https_compatible=True)
            listeners.append(listener)
        return listeners

    def _ssl_context(self) -> ssl.SSLContext:
        context: ssl.SSLContext = gunicorn_ssl_context(self.cfg)
        # Never agree to h2 in ALPN (gunicorn's http_protocols): we speak HTTP/1.1 only.
        context.set_alpn_protocols(["http/1.1"])
        return context

    async def _watch_signals(
        self,
        signals: AsyncIterator[int],
        serving: trio.CancelScope,
        everything: trio.CancelScope,
    ) -> None:
        async for signum in signals:
            self.alive = False
            if signum == signal.SIGTERM:
                serving.cancel()  # graceful: requests in flight get the grace period
                continue
            # QUIT, INT: gunicorn's immediate shutdown.
            self.cfg.worker_int(self)
            self._quit_timer = threading.Timer(QUICK_EXIT_SECONDS, os._exit, (0,))
            self._quit_timer.daemon = True
            self._quit_timer.start()
            everything.cancel()

    def _counting(self, app: WSGIApp, serving: trio.CancelScope) -> WSGIApp:
        """``app``, stopping the worker once ``max_requests`` requests have reached it."""
        if not self.cfg.max_requests:
            return app
        token = trio.lowlevel.current_trio_token()

        def count_request() -> None:  # in the event loop: no lock needed
            self.nr += 1
            if self.nr >= self.max_requests and self.alive:
                self.log.info("Autorestarting worker after current request.")
                self.alive = False
                serving.cancel()

        def counting_app(environ: dict[str, Any], start_response: Any) -> Any:
            # The app runs in a worker thread, which writes the response itself: the
            # count must have stopped the server before that, or the client's next
            # request could still be accepted here (max_requests + 1).
            trio.from_thread.run_sync(count_request, trio_token=token)
            return app(environ, start_response)

        return counting_app

    async def _watch(self, serving: trio.CancelScope) -> None:
        """The arbiter's heartbeat, kept up through the grace period too, and the other
        reasons to stop."""
        while True:
            self.notify()
            if self.alive and os.getppid() != self.ppid:
                self.log.info("Parent changed, shutting down: %s", self)
                self.alive = False
            if not self.alive:  # also set by gunicorn's handlers and its reloader
                serving.cancel()
            await trio.sleep(WATCH_INTERVAL)
