"""``triowsgi --workers N``: N processes under gunicorn's arbiter, one core each.

gunicorn's arbiter is the multi-process engine, with its worker class
:class:`triowsgi.gunicorn.Worker`; this module only configures it from the command line
(the ``gunicorn`` extra: ``pip install 'triowsgi[gunicorn]'``). The arbiter binds the
sockets, forks the workers and manages them as under ``gunicorn``: ``TERM`` stops
gracefully, ``INT``/``QUIT`` at once, ``HUP`` replaces the workers (which import the app
anew, so new code is served), ``TTIN``/``TTOU`` add or remove one.

The arbiter gets the settings it acts on itself: the binds, the number of workers, the
TLS files, the log level and logs, and the shutdown deadline. The workers get every
other flag as the same triowsgi option it is in one process, so that nothing changes
with ``--workers`` (gunicorn's own defaults, a 2 s keep-alive and one thread, do not
apply): the worker reads them from the application object (``triowsgi_options``).
"""

from __future__ import annotations

import math
from typing import Any, Final, NoReturn

from ._config import Config
from ._loading import CLIError, freeze_heap, load_app

__all__ = ["GUNICORN_MISSING", "arbiter_settings", "run_arbiter"]

GUNICORN_MISSING: Final = "--workers needs gunicorn: pip install 'triowsgi[gunicorn]'"
# The arbiter SIGKILLs workers still running this long after its TERM. Beyond the
# workers' own grace period, so that they end it themselves (finishing their log
# lines and gunicorn's worker_exit hook) instead of being killed at the same moment.
ARBITER_GRACE_MARGIN: Final = 2.0
# gunicorn's graceful_timeout is a whole number of seconds: "--graceful-timeout inf"
# (wait for ever) becomes a century.
FOREVER_SECONDS: Final = 100 * 365 * 24 * 3600


def arbiter_settings(
    *,
    workers: int,
    binds: list[str],
    certfile: str | None,
    keyfile: str | None,
    graceful_timeout: float | None,
    log_level: str,
    access_log: bool,
) -> dict[str, Any]:
    """gunicorn settings for the arbiter of ``triowsgi --workers``."""
    grace = Config().graceful_timeout if graceful_timeout is None else graceful_timeout
    grace = min(grace + ARBITER_GRACE_MARGIN, FOREVER_SECONDS)
    settings: dict[str, Any] = {
        "bind": binds,
        "workers": workers,
        "worker_class": "triowsgi.gunicorn.Worker",
        "graceful_timeout": math.ceil(grace),
        "loglevel": log_level,
        "accesslog": "-" if access_log else None,  # stdout, as gunicorn's "-"
        "proc_name": "triowsgi",
    }
    if certfile is not None:
        settings["certfile"] = certfile
    if keyfile is not None:
        settings["keyfile"] = keyfile
    return settings


def run_arbiter(
    app_spec: str,
    factory: bool,
    settings: dict[str, Any],
    options: dict[str, Any],
    *,
    gc_freeze: bool,
) -> NoReturn:
    """Run gunicorn's arbiter; it exits the process when it stops. With ``gc_freeze``,
    each worker freezes its heap once it has loaded the app (see :func:`freeze_heap`).

    Raises:
        ImportError: gunicorn is not installed (say :data:`GUNICORN_MISSING`).
    """
    from gunicorn.app.base import BaseApplication
    from gunicorn.errors import AppImportError

    class Application(BaseApplication):  # type: ignore[misc]  # gunicorn has no type hints
        def __init__(self) -> None:
            self.triowsgi_options = options  # read by triowsgi.gunicorn.Worker
            super().__init__(prog="triowsgi")

        def load_config(self) -> None:
            for name, value in settings.items():
                self.cfg.set(name, value)
            # gunicorn >= 25 opens a control socket at one fixed path per user, which
            # a second server would fight over; triowsgi has no use for it.
            if "control_socket_disable" in self.cfg.settings:
                self.cfg.set("control_socket_disable", True)

        def load(self) -> Any:
            # In each worker, as gunicorn does: the arbiter never imports the app, so
            # the workers that HUP starts import the code as it is then.
            try:
                app = load_app(app_spec, factory=factory)
            except CLIError as exc:
                raise AppImportError(f"triowsgi: error: {exc}") from None
            if gc_freeze:
                freeze_heap()
            return app

    Application().run()
    raise SystemExit(0)  # the arbiter exits by itself; never reached
