"""Where triowsgi's log lines go, and the access log line (eventlet's fields and format)."""

from __future__ import annotations

import os
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


class ServerLog:
    """Writes to the ``log`` option as eventlet does.

    A logger (anything with callable ``info`` and ``debug``) is called directly; anything
    else is a file written one line at a time, where debug lines appear only with
    ``debug=True``. ``log_output=False`` silences everything.
    """

    __slots__ = ("_config", "_target", "enabled", "is_logger")

    def __init__(self, config: Config) -> None:
        self._config = config
        self._target: Any = config.log_target
        self.enabled = config.log_output
        self.is_logger = callable(getattr(self._target, "info", None)) and callable(
            getattr(self._target, "debug", None)
        )

    def info(self, message: str) -> None:
        if self.enabled:
            self._emit("info", message)

    def debug(self, message: str) -> None:
        if self.enabled and (self.is_logger or self._config.debug):
            self._emit("debug", message)

    def error(self, message: str) -> None:
        if self.enabled:
            self._emit("error", message)

    def exception(self, message: str, exc: BaseException) -> None:
        """Log ``message`` with ``exc``'s traceback, at error level."""
        if self.enabled:
            tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            self._emit("error", f"{message}\n{tb.rstrip()}")

    def access(self, fields: Mapping[str, object]) -> None:
        """One access line, ``log_format % fields`` (the format was checked at start-up)."""
        if self.enabled:
            self._emit("info", self._config.log_format % fields)

    def _emit(self, level: str, message: str) -> None:
        if self.is_logger:
            getattr(self._target, level, self._target.info)(message)
        else:
            self._target.write(message + "\n")
            flush = getattr(self._target, "flush", None)
            if flush is not None:
                flush()


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
