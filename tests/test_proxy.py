"""Behind a reverse proxy: ``forwarded_allow_ips`` names the peers whose
``X-Forwarded-For`` and ``X-Forwarded-Proto`` are believed. From them, the headers set
``REMOTE_ADDR`` and ``wsgi.url_scheme``; from anyone else (and by default) they are only
headers, since a client can write anything in them."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import pytest
import trio
from conftest import RawClient, StartServer, hello_app

import triowsgi
from triowsgi._proxy import TrustedProxies

SEEN_KEYS = ("REMOTE_ADDR", "REMOTE_PORT", "wsgi.url_scheme", "HTTPS", "HTTP_X_FORWARDED_FOR")


def seen_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """Answers with what the app sees of the client: the keys a proxy may rewrite."""
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps({k: environ.get(k) for k in SEEN_KEYS}).encode()]


async def seen(port: int, *headers: str) -> dict[str, Any]:
    """One GET from 127.0.0.1 with extra header lines; what the app saw."""
    client = await RawClient.connect(port)
    try:
        return await seen_on(client, *headers)
    finally:
        await client.aclose()


async def seen_on(client: RawClient, *headers: str) -> dict[str, Any]:
    head = "".join(f"{h}\r\n" for h in headers)
    await client.send(f"GET / HTTP/1.1\r\nHost: x\r\n{head}\r\n".encode())
    status, _, body = await client.read_response()
    assert status == b"HTTP/1.1 200 OK"
    result: dict[str, Any] = json.loads(body)
    return result


# -- from a trusted proxy ----------------------------------------------------------------


async def test_x_forwarded_for_from_a_trusted_peer_sets_remote_addr(
    start_server: StartServer,
) -> None:
    server = await start_server(seen_app, forwarded_allow_ips="127.0.0.1")
    environ = await seen(server.port, "X-Forwarded-For: 203.0.113.7")
    assert environ["REMOTE_ADDR"] == "203.0.113.7"
    # The client's port is not forwarded; the proxy's own port would be a lie.
    assert environ["REMOTE_PORT"] == "0"
    # The header itself is still there for the app to read.
    assert environ["HTTP_X_FORWARDED_FOR"] == "203.0.113.7"


async def test_the_client_is_the_rightmost_untrusted_hop(start_server: StartServer) -> None:
    # Each proxy appends the peer it saw: 10.0.0.2 is our inner proxy, so the client is
    # the hop before it. Anything further left was written by the client itself.
    server = await start_server(seen_app, forwarded_allow_ips="127.0.0.1,10.0.0.0/8")
    environ = await seen(server.port, "X-Forwarded-For: 1.2.3.4, 10.0.0.2")
    assert environ["REMOTE_ADDR"] == "1.2.3.4"
    environ = await seen(server.port, "X-Forwarded-For: 6.6.6.6, 1.2.3.4, 10.0.0.2")
    assert environ["REMOTE_ADDR"] == "1.2.3.4"


async def test_repeated_x_forwarded_for_lines_form_one_chain(start_server: StartServer) -> None:
    server = await start_server(seen_app, forwarded_allow_ips="127.0.0.1,10.0.0.0/8")
    environ = await seen(server.port, "X-Forwarded-For: 1.2.3.4", "X-Forwarded-For: 10.0.0.2")
    assert environ["REMOTE_ADDR"] == "1.2.3.4"


async def test_a_chain_of_only_trusted_hops_gives_the_leftmost(start_server: StartServer) -> None:
    server = await start_server(seen_app, forwarded_allow_ips="127.0.0.1,10.0.0.0/8")
    environ = await seen(server.port, "X-Forwarded-For: 10.1.1.1, 10.0.0.2")
    assert environ["REMOTE_ADDR"] == "10.1.1.1"


async def test_an_ipv6_client_address_is_passed_on(start_server: StartServer) -> None:
    server = await start_server(seen_app, forwarded_allow_ips="127.0.0.1")
    environ = await seen(server.port, "X-Forwarded-For: 2001:db8::7")
    assert environ["REMOTE_ADDR"] == "2001:db8::7"


async def test_x_forwarded_proto_https_sets_the_scheme(start_server: StartServer) -> None:
    server = await start_server(seen_app, forwarded_allow_ips="127.0.0.1")
    environ = await seen(server.port, "X-Forwarded-Proto: https")
    assert environ["wsgi.url_scheme"] == "https"
    assert environ["HTTPS"] == "on"
    # Without X-Forwarded-For, the peer stays the client.
    assert environ["REMOTE_ADDR"] == "127.0.0.1"
    assert environ["REMOTE_PORT"] != "0"


async def test_x_forwarded_proto_takes_the_nearest_proxys_word(start_server: StartServer) -> None:
    server = await start_server(seen_app, forwarded_allow_ips="127.0.0.1")
    environ = await seen(server.port, "X-Forwarded-Proto: http, HTTPS")
    assert environ["wsgi.url_scheme"] == "https"
    environ = await seen(server.port, "X-Forwarded-Proto: https, http")
    assert environ["wsgi.url_scheme"] == "http"
    assert environ["HTTPS"] is None


async def test_an_unknown_x_forwarded_proto_is_ignored(start_server: StartServer) -> None:
    server = await start_server(seen_app, forwarded_allow_ips="127.0.0.1")
    environ = await seen(server.port, "X-Forwarded-Proto: gopher")
    assert environ["wsgi.url_scheme"] == "http"
    assert environ["HTTPS"] is None


async def test_each_request_on_a_keep_alive_connection_is_judged_alone(
    start_server: StartServer,
) -> None:
    server = await start_server(seen_app, forwarded_allow_ips="127.0.0.1")
    client = await RawClient.connect(server.port)
    first = await seen_on(client, "X-Forwarded-For: 203.0.113.7", "X-Forwarded-Proto: https")
    second = await seen_on(client)
    await client.aclose()
    assert (first["REMOTE_ADDR"], first["wsgi.url_scheme"]) == ("203.0.113.7", "https")
    assert (second["REMOTE_ADDR"], second["wsgi.url_scheme"]) == ("127.0.0.1", "http")
    assert second["HTTPS"] is None


async def test_star_trusts_every_peer(start_server: StartServer) -> None:
    server = await start_server(seen_app, forwarded_allow_ips="*")
    environ = await seen(server.port, "X-Forwarded-For: 203.0.113.7, 10.0.0.2")
    # With every address trusted, no hop is untrusted: the leftmost is the client.
    assert environ["REMOTE_ADDR"] == "203.0.113.7"


async def test_unix_trusts_a_proxy_on_a_unix_socket(nursery: trio.Nursery, tmp_path: Path) -> None:
    path = str(tmp_path / "app.sock")
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    await sock.bind(path)
    sock.listen()
    await nursery.start(
        functools.partial(
            triowsgi.serve_listeners,
            seen_app,
            [trio.SocketListener(sock)],
            forwarded_allow_ips="unix",
        )
    )
    client = RawClient(await trio.open_unix_socket(path))
    environ = await seen_on(client, "X-Forwarded-For: 203.0.113.7", "X-Forwarded-Proto: https")
    await client.aclose()
    assert environ["REMOTE_ADDR"] == "203.0.113.7"
    assert environ["wsgi.url_scheme"] == "https"


# -- from anyone else ------------------------------------------------------------------


async def test_headers_from_an_untrusted_peer_are_ignored(start_server: StartServer) -> None:
    server = await start_server(seen_app, forwarded_allow_ips="10.0.0.1")
    environ = await seen(server.port, "X-Forwarded-For: 203.0.113.7", "X-Forwarded-Proto: https")
    assert environ["REMOTE_ADDR"] == "127.0.0.1"
    assert environ["REMOTE_PORT"] != "0"
    assert environ["wsgi.url_scheme"] == "http"
    assert environ["HTTPS"] is None
    # Still readable as plain headers.
    assert environ["HTTP_X_FORWARDED_FOR"] == "203.0.113.7"


async def test_by_default_no_peer_is_trusted(start_server: StartServer) -> None:
    server = await start_server(seen_app)
    environ = await seen(server.port, "X-Forwarded-For: 203.0.113.7", "X-Forwarded-Proto: https")
    assert environ["REMOTE_ADDR"] == "127.0.0.1"
    assert environ["wsgi.url_scheme"] == "http"
    assert environ["HTTPS"] is None


# -- the option ------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["127.0.0.300", "10.0.0.0/33", "localhost", "127.0.0.1,nope"])
async def test_an_invalid_spec_fails_at_start_naming_the_option(
    start_server: StartServer, spec: str
) -> None:
    with pytest.raises(ValueError, match="forwarded_allow_ips"):
        await start_server(hello_app, forwarded_allow_ips=spec)


def test_an_invalid_spec_is_rejected_by_the_config() -> None:
    with pytest.raises(ValueError, match=r"forwarded_allow_ips.*'10\.0\.0\.0/8'"):
        triowsgi.Config.from_options(forwarded_allow_ips="10.0.0.1/99")


def test_a_spec_that_is_not_text_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="forwarded_allow_ips"):
        triowsgi.Config.from_options(forwarded_allow_ips=["127.0.0.1", 7])


async def test_a_tuple_spec_is_accepted(start_server: StartServer) -> None:
    server = await start_server(seen_app, forwarded_allow_ips=("10.0.0.0/8", "127.0.0.1"))
    environ = await seen(server.port, "X-Forwarded-For: 203.0.113.7")
    assert environ["REMOTE_ADDR"] == "203.0.113.7"


# -- TrustedProxies ------------------------------------------------------------------


def test_trusted_proxies_addresses_and_networks() -> None:
    proxies = TrustedProxies(" 127.0.0.1 , 10.0.0.0/8,, fd00::/8 ")
    assert proxies.trusts("127.0.0.1")
    assert proxies.trusts("10.200.3.4")
    assert proxies.trusts("fd00::1")
    assert not proxies.trusts("127.0.0.2")
    assert not proxies.trusts("11.0.0.1")
    assert not proxies.trusts("2001:db8::1")
    assert not proxies.trusts("unix")
    assert not proxies.trusts("not-an-address")


def test_trusted_proxies_host_bits_in_a_network_are_tolerated() -> None:
    assert TrustedProxies("10.1.2.3/8").trusts("10.9.9.9")


def test_trusted_proxies_unix_and_star() -> None:
    unix = TrustedProxies("unix")
    assert unix.trusts("unix")
    assert not unix.trusts("127.0.0.1")
    star = TrustedProxies(["*"])
    assert star.trusts("127.0.0.1")
    assert star.trusts("unix")
    assert star.trusts("2001:db8::1")


def test_trusted_proxies_is_false_when_empty() -> None:
    assert not TrustedProxies("")
    assert not TrustedProxies(" , ")
    assert not TrustedProxies(())
    assert TrustedProxies("unix")
    assert TrustedProxies("*")
    assert TrustedProxies("::1")


def test_trusted_proxies_rejects_what_is_not_an_address() -> None:
    with pytest.raises(ValueError):
        TrustedProxies("localhost")


def _environ(peer: str, **headers: str) -> dict[str, Any]:
    return {"REMOTE_ADDR": peer, "REMOTE_PORT": "5555", "wsgi.url_scheme": "http", **headers}


def test_apply_rewrites_only_for_a_trusted_peer() -> None:
    proxies = TrustedProxies("10.0.0.0/8")
    trusted = _environ("10.0.0.5", HTTP_X_FORWARDED_FOR="1.2.3.4, 10.0.0.9")
    proxies.apply(trusted)
    assert (trusted["REMOTE_ADDR"], trusted["REMOTE_PORT"]) == ("1.2.3.4", "0")
    untrusted = _environ("192.0.2.1", HTTP_X_FORWARDED_FOR="1.2.3.4")
    proxies.apply(untrusted)
    assert (untrusted["REMOTE_ADDR"], untrusted["REMOTE_PORT"]) == ("192.0.2.1", "5555")


def test_apply_http_proto_undoes_https() -> None:
    # A TLS listener behind a proxy that took plain HTTP from the client.
    environ = _environ("127.0.0.1", HTTP_X_FORWARDED_PROTO="http")
    environ.update({"wsgi.url_scheme": "https", "HTTPS": "on"})
    TrustedProxies("127.0.0.1").apply(environ)
    assert environ["wsgi.url_scheme"] == "http"
    assert "HTTPS" not in environ


def test_apply_with_an_empty_chain_keeps_the_peer() -> None:
    environ = _environ("127.0.0.1", HTTP_X_FORWARDED_FOR=" , ")
    TrustedProxies("127.0.0.1").apply(environ)
    assert (environ["REMOTE_ADDR"], environ["REMOTE_PORT"]) == ("127.0.0.1", "5555")
