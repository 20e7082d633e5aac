"""The server options: eventlet's names and defaults, triowsgi's own limits, and
validation at start-up with errors that name the option."""

from __future__ import annotations

import dataclasses
import io
import logging
import math
import socket
from collections.abc import Iterator

import pytest
import trio
from conftest import hello_app

import triowsgi
from triowsgi import Config
from triowsgi._config import KEEPALIVE_TIMEOUT, check_port

DOCUMENTED_DEFAULTS = {
    "max_size": 1024,
    "minimum_chunk_size": 4096,
    "url_length_limit": 8192,
    "debug": False,
    "keepalive": True,
    "capitalize_response_headers": True,
    "log_x_forwarded_for": True,
    "log_output": True,
    "socket_timeout": None,
    "max_http_version": "HTTP/1.1",
    "threads": 128,
    "max_header_fields": 100,
    "max_header_bytes": 65536,
    "log": None,
    "custom_pool": None,
    "log_format": triowsgi.DEFAULT_LOG_FORMAT,
    # triowsgi's own, beyond eventlet's.
    "graceful_timeout": 30.0,
    "header_timeout": 20.0,
    "body_timeout": 20.0,
    "body_min_rate": 500.0,
    "send_timeout": 60.0,
    "max_body_size": 1024**3,
    "forwarded_allow_ips": (),
}


@pytest.mark.parametrize(("name", "default"), DOCUMENTED_DEFAULTS.items())
def test_default(name: str, default: object) -> None:
    assert getattr(Config.from_options(), name) == default


def test_default_log_format_is_eventlets() -> None:
    assert triowsgi.DEFAULT_LOG_FORMAT == (
        '%(client_ip)s - - [%(date_time)s] "%(request_line)s" %(status_code)s '
        "%(body_length)s %(wall_seconds).6f"
    )


def test_default_environ_is_empty() -> None:
    assert dict(Config.from_options().environ) == {}


def test_none_means_default_for_eventlet_style_calls() -> None:
    # eventlet's signature has max_size=None, minimum_chunk_size=None: passing them
    # through explicitly must still give the defaults.
    config = Config.from_options(max_size=None, minimum_chunk_size=None, environ=None)
    assert config.max_size == 1024
    assert config.minimum_chunk_size == 4096
    assert dict(config.environ) == {}


def test_accepted_values_are_kept() -> None:
    pool = trio.CapacityLimiter(3)
    log = io.StringIO()
    config = Config.from_options(
        max_size=7,
        keepalive=2.5,
        socket_timeout=1,
        max_http_version="HTTP/1.0",
        custom_pool=pool,
        log=log,
        environ={"x": 1},
        threads=2,
    )
    assert (config.max_size, config.keepalive, config.socket_timeout) == (7, 2.5, 1)
    assert config.max_http_version == "HTTP/1.0"
    assert config.custom_pool is pool
    assert config.log is log
    assert config.environ == {"x": 1}
    assert config.threads == 2


def test_keepalive_number_is_the_idle_timeout() -> None:
    assert Config.from_options(keepalive=3).keepalive_timeout == 3.0
    assert Config.from_options(keepalive=math.inf).keepalive_timeout == math.inf


def test_keepalive_true_is_75_seconds_idle_or_socket_timeout_if_shorter() -> None:
    assert Config.from_options(keepalive=True).keepalive_timeout == KEEPALIVE_TIMEOUT == 75.0
    assert Config.from_options(socket_timeout=5).keepalive_timeout == 5.0
    assert Config.from_options(socket_timeout=500).keepalive_timeout == 75.0


@pytest.mark.parametrize("off", [0, 0.0, False])
def test_keepalive_zero_means_off(off: object) -> None:
    assert Config.from_options(keepalive=off).keepalive is False


@pytest.mark.parametrize(
    "name",
    ["socket_timeout", "header_timeout", "body_timeout", "body_min_rate", "send_timeout"],
)
def test_none_turns_a_client_limit_off(name: str) -> None:
    assert getattr(Config.from_options(**{name: None}), name) is None


@pytest.mark.parametrize("off", [None, math.inf])
def test_none_or_inf_removes_the_body_size_limit(off: object) -> None:
    assert Config.from_options(max_body_size=off).max_body_size is None


@pytest.mark.parametrize("off", [None, math.inf])
def test_none_or_inf_lets_the_shutdown_wait_for_ever(off: object) -> None:
    assert Config.from_options(graceful_timeout=off).graceful_timeout == math.inf


def test_keepalive_none_is_off_as_in_eventlet() -> None:
    # eventlet tests `if keepalive:`: every falsy value, None included, means off.
    config = Config.from_options(keepalive=None)
    assert config.keepalive is False


@pytest.mark.parametrize(
    "name", ["log_x_forwarded_for", "log_output", "debug", "capitalize_response_headers"]
)
def test_none_is_false_for_eventlets_true_or_false_options(name: str) -> None:
    assert getattr(Config.from_options(**{name: None}), name) is False


@pytest.mark.parametrize(
    "name",
    [
        "max_http_version",
        "log_format",
        "url_length_limit",
        "threads",
        "max_header_fields",
        "max_header_bytes",
        "forwarded_allow_ips",
    ],
)
def test_none_is_refused_where_it_means_nothing(name: str) -> None:
    with pytest.raises((TypeError, ValueError), match=name):
        Config.from_options(**{name: None})


@pytest.mark.parametrize("port", [0, 1, 8090, 65535])
def test_a_port_from_0_to_65535_is_accepted(port: int) -> None:
    assert check_port(port) == port


@pytest.mark.parametrize(
    ("port", "error"),
    [
        (-1, ValueError),
        (65536, ValueError),
        (99999, ValueError),
        ("80", TypeError),
        (True, TypeError),
    ],
)
def test_a_port_outside_0_to_65535_is_an_error_naming_it(port: object, error: type) -> None:
    with pytest.raises(error, match=r"^--port must be"):
        check_port(port, "--port")


def test_a_logger_is_accepted_as_log() -> None:
    logger = logging.getLogger("triowsgi-test")
    assert Config.from_options(log=logger).log is logger


def test_unknown_option_is_a_type_error_naming_it() -> None:
    with pytest.raises(TypeError, match="'max_sizee'"):
        Config.from_options(max_sizee=3)


def test_protocol_names_the_replacement() -> None:
    with pytest.raises(TypeError, match="protocol") as info:
        Config.from_options(protocol=object)
    assert "middleware" in str(info.value)


def test_server_event_names_the_replacement() -> None:
    with pytest.raises(TypeError, match="server_event") as info:
        Config.from_options(server_event=object())
    assert "nursery.start" in str(info.value)


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"max_size": 0}, ValueError),
        ({"max_size": "3"}, TypeError),
        ({"max_size": 2.0}, TypeError),
        ({"max_size": True}, TypeError),
        ({"minimum_chunk_size": -1}, ValueError),
        ({"url_length_limit": 0}, ValueError),
        ({"threads": 0}, ValueError),
        ({"max_header_fields": 0}, ValueError),
        ({"max_header_bytes": 10}, ValueError),
        ({"keepalive": -1}, ValueError),
        ({"keepalive": "yes"}, TypeError),
        ({"socket_timeout": 0}, ValueError),
        ({"socket_timeout": -0.5}, ValueError),
        ({"socket_timeout": "10"}, TypeError),
        ({"max_http_version": "HTTP/2"}, ValueError),
        ({"custom_pool": object()}, TypeError),
        ({"log_format": "%(nope)s"}, ValueError),
        ({"log_format": "%(status_code)d %(client_ip)d"}, ValueError),
        ({"log_format": b"%(client_ip)s"}, TypeError),
        ({"log": 42}, TypeError),
        ({"debug": 1}, TypeError),
        ({"log_output": "no"}, TypeError),
        ({"environ": [("a", "b")]}, TypeError),
        ({"graceful_timeout": 0}, ValueError),
        ({"header_timeout": -1}, ValueError),
        ({"max_body_size": -1}, ValueError),
        ({"body_timeout": 0}, ValueError),
        ({"body_timeout": "20"}, TypeError),
        ({"body_min_rate": -500}, ValueError),
        ({"body_min_rate": "500"}, TypeError),
        ({"send_timeout": 0}, ValueError),
        ({"send_timeout": True}, TypeError),
        ({"forwarded_allow_ips": "not-an-ip"}, ValueError),
        ({"forwarded_allow_ips": 10}, TypeError),
    ],
    ids=lambda v: repr(v) if isinstance(v, dict) else "",
)
def test_bad_value_names_the_option(options: dict[str, object], error: type) -> None:
    (name,) = options
    with pytest.raises(error, match=name):
        Config.from_options(**options)


def test_config_is_frozen() -> None:
    config = Config.from_options()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.max_size = 5  # type: ignore[misc]
    assert config.max_size == 1024


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port something else listens on: binding it fails (EADDRINUSE)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


async def test_serve_rejects_a_bad_option_before_binding(taken_port: int) -> None:
    # Binding first would leave the port taken and surface the error only later: here
    # the bind would fail (the port is taken), so only a check made before it passes.
    with trio.fail_after(5), pytest.raises(ValueError, match="max_size"):
        await triowsgi.serve(hello_app, taken_port, "127.0.0.1", max_size=0)


@pytest.mark.parametrize("port", [-1, 65536, 99999])
async def test_serve_rejects_a_port_outside_0_to_65535(port: int) -> None:
    # trio would bind 99999 as 34463 (99999 mod 65536).
    with trio.fail_after(5), pytest.raises(ValueError, match=r"^port must be from 0 to 65535"):
        await triowsgi.serve(hello_app, port, "127.0.0.1")


async def test_serve_listeners_rejects_a_bad_option_and_leaves_the_listener_alone() -> None:
    (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    with pytest.raises(TypeError, match="bogus"):
        await triowsgi.serve_listeners(hello_app, [listener], bogus=1)
    assert listener.socket.fileno() != -1
    await listener.aclose()


def test_blocking_server_rejects_a_bad_option_before_running() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        with pytest.raises(TypeError, match="server_event"):
            triowsgi.server(sock, hello_app, server_event=None)
        assert sock.fileno() != -1
