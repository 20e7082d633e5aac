"""Trusting a reverse proxy: ``X-Forwarded-For`` and ``X-Forwarded-Proto`` from peers in
``forwarded_allow_ips`` set ``REMOTE_ADDR`` and ``wsgi.url_scheme``; from anyone else they
are only headers (a client can write anything in them)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any, Final, final

__all__ = ["TrustedProxies"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_SCHEMES: Final = frozenset({"http", "https"})


@final
class TrustedProxies:
    """The peers whose forwarding headers are believed: addresses, networks, ``"*"``
    (any peer), or ``"unix"`` for unix-socket peers (a proxy on the same host)."""

    def __init__(self, spec: str | Iterable[str]) -> None:
        items = spec.split(",") if isinstance(spec, str) else list(spec)
        names = [item.strip() for item in items if item.strip()]
        self.any = "*" in names
        self.unix = "unix" in names
        self._networks: list[Network] = [
            ipaddress.ip_network(name, strict=False) for name in names if name not in ("*", "unix")
        ]

    def __bool__(self) -> bool:
        return self.any or self.unix or bool(self._networks)

    def trusts(self, address: str) -> bool:
        if self.any:
            return True
        if address == "unix":
            return self.unix
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self._networks)

    def apply(self, environ: dict[str, Any]) -> None:
        """Rewrite ``REMOTE_ADDR``/``wsgi.url_scheme`` if the peer is a trusted proxy."""
        if not self.trusts(environ["REMOTE_ADDR"]):
            return
        client = self._client(environ.get("HTTP_X_FORWARDED_FOR", "").split(","))
        if client:  # a blank X-Forwarded-For names nobody: the peer stays the client
            environ["REMOTE_ADDR"] = client
            environ["REMOTE_PORT"] = "0"  # the client's port is not forwarded
        proto = environ.get("HTTP_X_FORWARDED_PROTO", "").rsplit(",", 1)[-1].strip().lower()
        if proto in _SCHEMES:
            environ["wsgi.url_scheme"] = proto
            if proto == "https":
                environ["HTTPS"] = "on"
            else:
                environ.pop("HTTPS", None)

    def _client(self, hops: list[str]) -> str:
        # Each proxy appends the peer it saw, so walk from the right past our own
        # proxies: the first untrusted address is the client; left of it is hearsay.
        hops = [hop.strip() for hop in hops if hop.strip()]
        for hop in reversed(hops):
            if not self.trusts(hop):
                return hop
        return hops[0] if hops else ""
