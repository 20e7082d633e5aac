"""Graceful shutdown: what happens when the scope running ``serve`` is cancelled.

Listeners and idle connections are cancelled at once, like everything else in the
server's nursery. A request in flight runs in a shielded scope instead, so it can finish
and reach the client; :meth:`Shutdown.begin` gives those scopes a deadline (the grace
period) and tells connections to close after their current response.
"""

from __future__ import annotations

import math
from typing import Any, Final, final

import trio

__all__ = ["FIRST_REQUEST_GRACE", "Shutdown"]

# How long a connection accepted just before shutdown may take to send its first
# request (gunicorn's threaded worker allows 2 s; clients send at once).
FIRST_REQUEST_GRACE: Final = 1.0


@final
class Shutdown:
    """Shared by a server and its connections."""

    def __init__(self) -> None:
        self.closing = False
        self._deadline = math.inf
        self._first_deadline = math.inf
        self._in_flight: set[trio.CancelScope] = set()
        self._first_requests: set[trio.CancelScope] = set()

    def begin(self, grace_seconds: float) -> None:
        """Stop reusing connections; give requests in flight ``grace_seconds`` to finish."""
        if self.closing:
            return
        self.closing = True
        self._deadline = trio.current_time() + grace_seconds
        for scope in self._in_flight:
            scope.deadline = self._deadline
        self._first_deadline = trio.current_time() + min(grace_seconds, FIRST_REQUEST_GRACE)
        for scope in self._first_requests:
            scope.deadline = self._first_deadline

    def in_flight(self) -> _InFlight:
        """A scope for one request: immune to the server's cancellation, bounded by the
        grace period once shutdown begins."""
        return _InFlight(self._in_flight, trio.CancelScope(shield=True, deadline=self._deadline))

    def first_request(self) -> _InFlight:
        """A scope for reading a new connection's first request: immune to the server's
        cancellation, bounded by ``FIRST_REQUEST_GRACE`` once shutdown begins."""
        scope = trio.CancelScope(shield=True, deadline=self._first_deadline)
        return _InFlight(self._first_requests, scope)


@final
class _InFlight:
    # A class rather than @contextmanager: this runs for every request.
    __slots__ = ("_registry", "_scope")

    def __init__(self, registry: set[trio.CancelScope], scope: trio.CancelScope) -> None:
        self._registry = registry
        self._scope = scope

    def __enter__(self) -> trio.CancelScope:
        self._registry.add(self._scope)
        return self._scope.__enter__()

    def __exit__(self, *exc_info: Any) -> bool:
        self._registry.discard(self._scope)
        return self._scope.__exit__(*exc_info)
