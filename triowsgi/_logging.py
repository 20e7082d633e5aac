"""Where triowsgi's log lines go, and the access log line (eventlet's fields and format)."""

from __future__ import annotations

import logging
import os
import sys
import time
import traceback
from collections.abc import Mapping
from typing import Any, Final

from ._config import Config

__all__ = ["ServerLog", "access_fields"]

_MONTHS: Final = (
    "Jan",
    "Feb",
    "Mar",
    "Apr",
    "May",
    "Jun",
    "Jul",
    "Aug",
    "Sep",
    "Oct",
    "Nov",
    "Dec",
)


# With no ``log`` option, lines go through these stdlib loggers, so that the
# application's logging configuration applies to them.
ACCESS_LOGGER: Final = "triowsgi.access"
# The access logger's level when the access log is off: one no record reaches. Not the
# logger's `disabled`, which an app's logging setup resets (Django's dictConfig with
# disable_existing_loggers=False, on every logger it does not name); levels it keeps.
ACCESS_OFF: Final = logging.CRITICAL + 1
ERROR_LOGGER: Final = "triowsgi.error"


class _Sink:
    """One destination: a logger (callable ``info`` and ``debug``) or a file."""

    __slots__ = ("_target", "is_logger")

    def __init__(self, target: Any) -> None:
        self._target = target
        self.is_logger = callable(getattr(target, "info", None)) and callable(
            getattr(target, "debug", None)
        )

    def wants_info(self) -> bool:
        """False when a stdlib logger would drop an info line anyway."""
        target = self._target
        if isinstance(target, logging.Logger):
            return not target.disabled and target.isEnabledFor(logging.INFO)
        return True

    def emit(self, level: str, message: str) -> None:
        if self.is_logger:
            getattr(self._target, level, self._target.info)(message)
        else:
            self._target.write(message + "\n")
            flush = getattr(self._target, "flush", None)
            if flush is not None:
                flush()


def _default_sink(name: str) -> _Sink:
    # Nobody configured logging: write to stderr as eventlet does, rather than let
    # logging's last-resort handler drop every line below WARNING.
    logger = logging.getLogger(name)
    return _Sink(logger if logger.hasHandlers() else sys.stderr)


class ServerLog:
    """Writes log lines as eventlet does, to the ``log`` option if given.

    A logger (anything with callable ``info`` and ``debug``) is called directly; anything
    else is a file written one line at a time, where debug lines appear only with
    ``debug=True``. Without ``log``, access lines go to the ``triowsgi.access`` logger and
    the rest to ``triowsgi.error`` (or stderr if logging is not configured).
    ``log_output=False`` silences everything.
    """

    __slots__ = ("_access", "_config", "_errors", "enabled")

    def __init__(self, config: Config) -> None:
        self._config = config
        self.enabled = config.log_output
        if config.log is None:
            self._access = _default_sink(ACCESS_LOGGER)
            self._errors = _default_sink(ERROR_LOGGER)
        else:
            self._access = self._errors = _Sink(config.log)

    def info(self, message: str) -> None:
        if self.enabled:
            self._errors.emit("info", message)

    def debug(self, message: str) -> None:
        if self.enabled and (self._errors.is_logger or self._config.debug):
            self._errors.emit("debug", message)

    def error(self, message: str) -> None:
        if self.enabled:
            self._errors.emit("error", message)

    def exception(self, message: str, exc: BaseException) -> None:
        """Log ``message`` with ``exc``'s traceback, at error level."""
        if self.enabled:
            tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            self._errors.emit("error", f"{message}\n{tb.rstrip()}")

    @property
    def access_enabled(self) -> bool:
        """Whether an access line would be written (so its fields are worth building)."""
        return self.enabled and self._access.wants_info()

    def access(self, fields: Mapping[str, object]) -> None:
        """One access line, ``log_format % fields`` (the format was checked at start-up)."""
        if self.enabled:
            self._access.emit("info", self._config.log_format % fields)


def pid_prefix() -> str:
    """eventlet's ``(<pid>)`` prefix for server messages."""
    return f"({os.getpid()})"


def log_date_time(timestamp: float) -> str:
    """``dd/Mon/yyyy hh:mm:ss`` in local time, as eventlet's access log shows it."""
    t = time.localtime(timestamp)
    return (
        f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"
    )


def access_fields(
    *,
    client_ip: str,
    client_port: str,
    forwarded_for: str | None,
    request_line: str,
    status_code: int,
    body_length: int,
    started: float,
    finished: float,
) -> dict[str, object]:
    """The fields ``log_format`` may use; ``forwarded_for`` is the X-Forwarded-For value
    when ``log_x_forwarded_for`` is on."""
    if forwarded_for:
        client_ip = forwarded_for.replace(" ", "") + "," + client_ip
    return {
        "client_ip": client_ip,
        "client_port": client_port,
        "date_time": log_date_time(time.time()),
        "request_line": request_line,
        "status_code": status_code,
        "body_length": body_length,
        "wall_seconds": finished - started,
    }
