"""The rules for a request head that h11 leaves to the server, as pure functions: each
head below is parsed by h11 as a real server's would be, then checked; the error type
names the status the client gets. The same cases on real sockets, with the status lines
and the closes, are in test_hostile_requests.py."""

from __future__ import annotations

import h11
import pytest

from triowsgi._config import Config
from triowsgi._errors import (
    BadRequest,
    ExpectationFailed,
    HTTPError,
    MethodNotImplemented,
    error_body,
)
from triowsgi._request import check_line_ends, check_request

CONFIG = Config()


def parse(head: bytes) -> h11.Request:
    """``head`` as h11 parses it for the server (it must accept it)."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(head)
    event = conn.next_event()
    assert isinstance(event, h11.Request)
    return event


def request_line(method: bytes, target: bytes) -> bytes:
    return b"%s %s HTTP/1.1\r\nHost: x\r\n\r\n" % (method, target)


def with_fields(*lines: bytes) -> bytes:
    return b"POST / HTTP/1.1\r\nHost: x\r\n" + b"".join(line + b"\r\n" for line in lines) + b"\r\n"


# -- control characters in field values (RFC 9110 §5.5) ----------------------------------

# What h11 lets through: every control character but NUL, LF, VT, FF and CR (which it
# refuses itself) and HTAB (allowed).
CONTROLS = [*range(0x01, 0x09), *range(0x0E, 0x20), 0x7F]


@pytest.mark.parametrize("byte", CONTROLS, ids=hex)
def test_a_control_character_in_a_value_is_refused(byte: int) -> None:
    head = with_fields(b"X-A: a%cb" % byte)
    parse(head)  # h11 accepts it: the check is ours
    with pytest.raises(BadRequest, match="control character"):
        check_line_ends(head)


@pytest.mark.parametrize(
    "value",
    [b"a\tb", b"caf\xe9", b"\x80\xff", b"", b"!~ text"],
    ids=["htab", "obs-text", "high-bytes", "empty", "visible"],
)
def test_htab_and_obs_text_are_allowed_in_a_value(value: bytes) -> None:
    check_line_ends(with_fields(b"X-A: " + value))


def test_only_the_head_is_checked() -> None:
    # What follows the head (a body, the next pipelined request) is not checked here: a
    # body may hold any bytes, and the next head is checked when it is parsed.
    head = with_fields(b"Content-Length: 3")
    check_line_ends(head + b"\x01\x7f\n")
    check_line_ends(head + b"GET / HTTP/1.1\r\nX-A: \x01\r\n\r\n")
    with pytest.raises(BadRequest, match="control character"):
        check_line_ends(with_fields(b"X-A: \x01") + b"GET / HTTP/1.1\r\n\r\n")


def test_a_bare_lf_is_still_told_apart() -> None:
    with pytest.raises(BadRequest, match="bare LF"):
        check_line_ends(b"GET / HTTP/1.1\r\nHost: x\nX-A: a\r\n\r\n")
    with pytest.raises(BadRequest, match="bare LF"):
        check_line_ends(b"GET / HTTP/1.1\r\nHost: x\r\n\n")


# -- the target's form and the method (RFC 9112 §3.2) ------------------------------------


@pytest.mark.parametrize(
    ("method", "target"),
    [
        (b"GET", b"/"),
        (b"GET", b"/a/b?c=d"),
        (b"OPTIONS", b"*"),
        (b"GET", b"http://a.example/x"),
        (b"POST", b"HTTPS://a.example:8443"),
        (b"OPTIONS", b"http://a.example"),
        (b"GET", b"http://[::1]:80/x"),
        (b"GET", b"svn+ssh://a.example/x"),  # any scheme (RFC 3986 §3.1)
        (b"connect", b"/x"),  # a method other than CONNECT, case included
    ],
)
def test_targets_in_a_form_their_method_allows(method: bytes, target: bytes) -> None:
    check_request(parse(request_line(method, target)), CONFIG)


@pytest.mark.parametrize(
    ("method", "target"),
    [
        (b"GET", b"*"),
        (b"POST", b"*"),
        (b"OPTIONS", b"*x"),
        (b"GET", b"example.com:443"),  # authority-form: CONNECT's
        (b"OPTIONS", b"example.com:443"),
        (b"connect", b"example.com:443"),
        (b"GET", b"foo/bar"),
        (b"GET", b"?q"),
        (b"GET", b"http:/x"),
        (b"GET", b"1http://a.example/x"),  # a scheme starts with a letter
        (b"GET", b"http:///x"),  # no host (RFC 9110 §4.2.1)
        (b"GET", b"http://:80/x"),
        (b"GET", b"http://user@a.example/x"),  # userinfo (RFC 9110 §4.2.4)
        (b"GET", b"http://a.example:port/x"),
    ],
)
def test_targets_in_a_form_their_method_does_not_allow(method: bytes, target: bytes) -> None:
    with pytest.raises(BadRequest):
        check_request(parse(request_line(method, target)), CONFIG)


def test_connect_is_501_whatever_its_target() -> None:
    for target in (b"example.com:443", b"/x", b"*"):
        with pytest.raises(MethodNotImplemented):
            check_request(parse(request_line(b"CONNECT", target)), CONFIG)


# -- Content-Type: one at most -----------------------------------------------------------


def test_one_content_type_is_served() -> None:
    check_request(parse(with_fields(b"Content-Type: text/plain; charset=a, b")), CONFIG)


@pytest.mark.parametrize("second", [b"Content-Type: text/plain", b"content-type: a/b"])
def test_more_than_one_content_type_is_refused(second: bytes) -> None:
    with pytest.raises(BadRequest, match="Content-Type"):
        check_request(parse(with_fields(b"Content-Type: text/plain", second)), CONFIG)


# -- Expect (RFC 9110 §10.1.1) -----------------------------------------------------------


@pytest.mark.parametrize(
    "lines",
    [
        (b"Expect: 100-continue",),
        (b"Expect: 100-Continue",),
        (b"Expect: 100-continue ,, ",),  # empty list members are ignored (RFC 9110 §5.6.1)
        (b"Expect: 100-continue", b"Expect: 100-continue"),
        (b"Expect:",),
    ],
)
def test_100_continue_is_the_expectation_met(lines: tuple[bytes, ...]) -> None:
    check_request(parse(with_fields(*lines)), CONFIG)


@pytest.mark.parametrize(
    "lines",
    [
        (b"Expect: foo",),
        (b"Expect: 100-continue, foo",),
        (b"Expect: 100-continue", b"Expect: foo"),
        (b"Expect: 100-continue;a=b",),
        (b"Expect: 100-continued",),
    ],
)
def test_any_other_expectation_is_417(lines: tuple[bytes, ...]) -> None:
    with pytest.raises(ExpectationFailed) as caught:
        check_request(parse(with_fields(*lines)), CONFIG)
    assert caught.value.status == 417


def test_417_has_its_reason_and_body() -> None:
    # The server's own error response for it (_connection answers any HTTPError so).
    assert issubclass(ExpectationFailed, HTTPError)
    assert error_body(ExpectationFailed.status) == b"417 Expectation Failed\n"
