"""Graceful shutdown: what happens when the scope running ``serve`` is cancelled.

The accept loops are cancelled with that scope, so listeners close at once. Connections
run in a nursery of their own whose scope is shielded from it (see ``_server.py``):
:meth:`Shutdown.begin` then decides their fate by what each is doing, and gives the rest
a deadline, the grace period.

Per-request cancel scopes would say the same thing, but entering a Trio cancel scope
costs about as much as a thread hop; a connection here only records its state.
"""

from __future__ import annotations

import enum
import math
from typing import Final, Protocol, final

import trio

__all__ = ["FIRST_REQUEST_GRACE", "Phase", "Shutdown"]

# How long a connection that has a request on its way (accepted just before shutdown
# began, or in the middle of sending a head) may take to get it in: gunicorn's
# threaded worker allows 2 s; clients send at once.
FIRST_REQUEST_GRACE: Final = 1.0


class Phase(enum.Enum):
    """What a connection is doing, as far as shutdown is concerned."""

    IDLE = "idle"  # between requests: closed at once
    READING = "reading"  # a request is on its way: FIRST_REQUEST_GRACE to get it in
    BUSY = "busy"  # a request is in flight: the grace period to finish it


class Abortable(Protocol):
    @property
    def phase(self) -> Phase:
        """What the connection is doing now."""
        ...

    def abort(self) -> None:
        """Close the connection now; its task sees the stream closed and ends."""

    def going_away(self) -> None:
        """The shutdown has begun: tell whoever took the connection over (see
        ``_upgrade.py``) to end its session."""


@final
class Shutdown:
    """Shared by a server and its connections."""

    def __init__(self) -> None:
        self.closing = False
        self.deadline = math.inf  # when requests still in flight are cancelled
        self.begun = trio.Event()
        self.drained = trio.Event()  # set once closing and no connection is left
        self.scope: trio.CancelScope | None = None  # the one the connections run in
        self._connections: set[Abortable] = set()

    def add(self, connection: Abortable) -> None:
        self._connections.add(connection)

    def discard(self, connection: Abortable) -> None:
        self._connections.discard(connection)
        if self.closing and not self._connections:
            self.drained.set()

    def begin(self, grace_seconds: float) -> None:
        """Close idle connections, stop reusing the others, start the grace period."""
        if self.closing:
            return
        self.closing = True
        self.deadline = trio.current_time() + grace_seconds
        self.abort(Phase.IDLE)
        for connection in list(self._connections):
            connection.going_away()
        self.begun.set()
        if not self._connections:
            self.drained.set()

    def end_now(self) -> None:
        """Cut the grace period short (a second Ctrl-C): cancel what is still running."""
        if self.scope is not None:
            self.scope.cancel()

    def abort(self, *phases: Phase) -> None:
        """Close every connection that is in one of ``phases``."""
        for connection in list(self._connections):
            if connection.phase in phases:
                connection.abort()
