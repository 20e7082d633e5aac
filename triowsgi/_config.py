"""One frozen, validated :class:`Config` per server, built from the keyword options.

Every option's name, default and accepted values live here and nowhere else. Validation
happens once, at start-up, and an error names the option and what it accepts.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Mapping
from typing import Any, Final

import trio

from ._proxy import TrustedProxies

__all__ = ["DEFAULT_LOG_FORMAT", "KEEPALIVE_TIMEOUT", "MAX_PORT", "Config", "check_port"]

# The largest TCP port number (RFC 793's 16-bit field); 0 asks the kernel for a free one.
MAX_PORT: Final = 65535

# Idle seconds allowed between requests with ``keepalive=True``: nginx's default, above
# the 60 s idle timeout of common load balancers and of nginx's upstream pool, so that the
# proxy in front closes first and never sends a request on a connection we are closing.
KEEPALIVE_TIMEOUT: Final = 75.0

# eventlet's default, kept so that log parsers written for eventlet keep working.
DEFAULT_LOG_FORMAT: Final = (
    '%(client_ip)s - - [%(date_time)s] "%(request_line)s" %(status_code)s '
    "%(body_length)s %(wall_seconds).6f"
)

# Sample values with the types the access log passes, to reject a bad format at start-up.
_LOG_FIELDS_SAMPLE: Final[Mapping[str, object]] = {
    "client_ip": "127.0.0.1",
    "client_port": "8090",
    "date_time": "24/Nov/2026 12:00:00",
    "request_line": "GET / HTTP/1.1",
    "status_code": 200,
    "body_length": 0,
    "wall_seconds": 0.0,
}

_REPLACED_OPTIONS: Final[Mapping[str, str]] = {
    "protocol": (
        "eventlet's 'protocol' class hook is not supported: use the server options and "
        "WSGI middleware instead"
    ),
    "server_event": (
        "eventlet's 'server_event' is not supported: use "
        "'await nursery.start(triowsgi.serve, app, port)', which returns the server handle"
    ),
}


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """The options of one server. Build it with :meth:`from_options`; never mutate it."""

    log: Any = None
    environ: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    max_size: int = 1024
    max_http_version: str = "HTTP/1.1"
    minimum_chunk_size: int = 4096
    log_x_forwarded_for: bool = True
    custom_pool: trio.CapacityLimiter | None = None
    keepalive: bool | float = True
    log_output: bool = True
    log_format: str = DEFAULT_LOG_FORMAT
    url_length_limit: int = 8192
    debug: bool = False
    socket_timeout: float | None = None
    capitalize_response_headers: bool = True
    # triowsgi's own limits, beyond eventlet's options.
    threads: int = 128
    max_header_fields: int = 100
    max_header_bytes: int = 64 * 1024
    graceful_timeout: float = 30.0  # math.inf (None given too): wait for ever
    header_timeout: float | None = 20.0
    # Apache mod_reqtimeout's body=20,MinRate=500: a request body may keep the server
    # waiting 20 s, plus 1 s per 500 bytes received.
    body_timeout: float | None = 20.0
    body_min_rate: float | None = 500.0
    # nginx's send_timeout: a response write that makes no progress for this long ends.
    send_timeout: float | None = 60.0
    max_body_size: int | None = 1024**3
    forwarded_allow_ips: str | tuple[str, ...] = ()

    @classmethod
    def from_options(cls, **options: Any) -> Config:
        """Validate ``options`` (eventlet's names plus triowsgi's) and freeze them.

        Raises:
            TypeError: an unknown option, a replaced eventlet option, or a value of the
                wrong type.
            ValueError: a value of the right type outside the accepted range.
        """
        for name, why in _REPLACED_OPTIONS.items():
            if name in options:
                raise TypeError(why)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise TypeError(
                f"unknown option(s) {', '.join(map(repr, unknown))}; "
                f"accepted options are: {', '.join(sorted(known))}"
            )
        config = cls(**_with_nones_read(options))
        config._validate()
        return config

    @property
    def keepalive_timeout(self) -> float:
        """Seconds a connection may sit idle between requests (``inf``: no limit).

        ``keepalive=True`` means :data:`KEEPALIVE_TIMEOUT`, or ``socket_timeout`` if that
        is shorter (it bounds every wait on a client); a number is the limit itself.
        """
        if isinstance(self.keepalive, bool):
            if self.socket_timeout is None:
                return KEEPALIVE_TIMEOUT
            return min(KEEPALIVE_TIMEOUT, self.socket_timeout)
        return float(self.keepalive)

    def _validate(self) -> None:
        _check_bool(
            self, "log_x_forwarded_for", "log_output", "debug", "capitalize_response_headers"
        )
        _check_int(self, "max_size", 1)
        _check_int(self, "minimum_chunk_size", 0)
        _check_int(self, "url_length_limit", 16)
        _check_int(self, "threads", 1)
        _check_int(self, "max_header_fields", 1)
        _check_int(self, "max_header_bytes", 1024)
        if self.max_http_version not in ("HTTP/1.1", "HTTP/1.0"):
            raise ValueError(
                f"max_http_version must be 'HTTP/1.1' or 'HTTP/1.0', not {self.max_http_version!r}"
            )
        pool = self.custom_pool
        if pool is not None and not isinstance(pool, trio.CapacityLimiter):
            raise TypeError(
                f"custom_pool must be a trio.CapacityLimiter, not {type(pool).__name__}"
            )
        if not isinstance(self.environ, Mapping):
            raise TypeError(f"environ must be a mapping, not {type(self.environ).__name__}")
        _check_seconds("socket_timeout", self.socket_timeout, allow_none=True)
        _check_seconds("graceful_timeout", self.graceful_timeout, allow_none=False)
        _check_seconds("header_timeout", self.header_timeout, allow_none=True)
        _check_seconds("body_timeout", self.body_timeout, allow_none=True)
        _check_seconds(
            "body_min_rate", self.body_min_rate, allow_none=True, unit="bytes per second"
        )
        _check_seconds("send_timeout", self.send_timeout, allow_none=True)
        if self.max_body_size is not None:
            _check_int(self, "max_body_size", 0)
        if not isinstance(self.keepalive, bool):
            _check_seconds("keepalive", self.keepalive, allow_none=False)
        self._validate_log()
        self._validate_proxies()

    def _validate_proxies(self) -> None:
        spec = self.forwarded_allow_ips
        if not isinstance(spec, (str, tuple)) or not all(isinstance(s, str) for s in spec):
            raise TypeError(
                "forwarded_allow_ips must be a comma-separated str or a tuple of str, "
                f"not {spec!r}"
            )
        try:
            TrustedProxies(spec)
        except ValueError as exc:
            raise ValueError(
                f"forwarded_allow_ips: {exc}; accepted: IP addresses, networks such as "
                "'10.0.0.0/8', 'unix' and '*'"
            ) from None

    def _validate_log(self) -> None:
        log = self.log
        is_logger = callable(getattr(log, "info", None)) and callable(getattr(log, "debug", None))
        if log is not None and not is_logger and not callable(getattr(log, "write", None)):
            raise TypeError(
                "log must be a file-like object (with write()) or a logger (with info() and "
                f"debug()), not {type(log).__name__}"
            )
        if not isinstance(self.log_format, str):
            raise TypeError(f"log_format must be a str, not {type(self.log_format).__name__}")
        try:
            self.log_format % _LOG_FIELDS_SAMPLE
        except (KeyError, ValueError, TypeError) as exc:
            raise ValueError(
                f"log_format {self.log_format!r} is not a valid %-format over the fields "
                f"{', '.join(_LOG_FIELDS_SAMPLE)}: {exc!r}"
            ) from None


class _NoneMeans(enum.Enum):
    """What an explicit None means for an option."""

    DEFAULT = "the default"  # eventlet's signature defaults it to None
    FALSE = "False"  # eventlet tests it for truth (``if keepalive:``), as it does 0
    ITSELF = "None"  # no log option (stderr), no pool, no limit
    FOR_EVER = "math.inf"  # no limit, kept as a number


# An option not named here rejects None (its validation names it).
_NONE_MEANS: Final[Mapping[str, _NoneMeans]] = {
    "environ": _NoneMeans.DEFAULT,
    "max_size": _NoneMeans.DEFAULT,
    "minimum_chunk_size": _NoneMeans.DEFAULT,
    "keepalive": _NoneMeans.FALSE,
    "log_x_forwarded_for": _NoneMeans.FALSE,
    "log_output": _NoneMeans.FALSE,
    "debug": _NoneMeans.FALSE,
    "capitalize_response_headers": _NoneMeans.FALSE,
    "log": _NoneMeans.ITSELF,
    "custom_pool": _NoneMeans.ITSELF,
    "socket_timeout": _NoneMeans.ITSELF,
    "header_timeout": _NoneMeans.ITSELF,
    "body_timeout": _NoneMeans.ITSELF,
    "body_min_rate": _NoneMeans.ITSELF,
    "send_timeout": _NoneMeans.ITSELF,
    "max_body_size": _NoneMeans.ITSELF,
    # The shutdown waits for requests in flight for ever, as eventlet's did.
    "graceful_timeout": _NoneMeans.FOR_EVER,
}


def _with_nones_read(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with None (and the other spellings of "off" or "no limit") read as
    :data:`_NONE_MEANS` says; a None left over fails validation, naming its option."""
    read = dict(options)
    for name, value in options.items():
        means = _NONE_MEANS.get(name) if value is None else None
        if means is _NoneMeans.DEFAULT:
            del read[name]
        elif means is _NoneMeans.FALSE:
            read[name] = False
        elif means is _NoneMeans.FOR_EVER:
            read[name] = math.inf
    keepalive = read.get("keepalive")
    if not isinstance(keepalive, bool) and keepalive == 0:
        read["keepalive"] = False  # eventlet: any falsy keepalive means "off"
    if read.get("max_body_size") == math.inf:
        read["max_body_size"] = None  # no limit, as the command line's "inf"
    return read


def check_port(port: object, name: str = "port") -> int:
    """``port`` if it is a TCP port number (0 for any free one); else a
    TypeError/ValueError naming ``name`` (the argument or flag it came from)."""
    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError(f"{name} must be an int from 0 to {MAX_PORT}, not {port!r}")
    if not 0 <= port <= MAX_PORT:
        raise ValueError(f"{name} must be from 0 to {MAX_PORT}, not {port}")
    return port


def _check_bool(config: Config, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be True or False, not {value!r}")


def _check_int(config: Config, name: str, minimum: int) -> None:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, not {value}")


def _check_seconds(name: str, value: object, *, allow_none: bool, unit: str = "seconds") -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        accepted = f"a number of {unit} or None" if allow_none else f"a number of {unit}"
        raise TypeError(f"{name} must be {accepted}, not {value!r}")
    if not value > 0:
        raise ValueError(f"{name} must be a positive number of {unit}, not {value!r}")
