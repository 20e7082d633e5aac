"""Connection slots: the ``max_size`` (or ``custom_pool``) tokens a connection holds from
accept to close, and who gives one up when they are all taken.

A connection that is waiting for a request head to start (idle between keep-alive
requests, or connected and silent since the accept) costs the server a slot and gives
nothing back. When every slot is taken and a client is waiting to be accepted, the one
that has waited longest is closed to admit the newcomer, as nginx reuses its idle
connections: a flood of silent connections then cycles through the slots instead of
locking everyone out. Only connections in the middle of a request make newcomers wait
in the kernel's backlog.
"""

from __future__ import annotations

from typing import Protocol, final

import trio

from ._logging import ServerLog

__all__ = ["Evictable", "Slots"]


class Evictable(Protocol):
    """A connection that may be asked to give its slot up."""

    @property
    def peer(self) -> str:
        """The client's address, for the log."""
        ...

    def evict(self) -> None:
        """Close the connection now; its task ends quietly and releases its slot."""


@final
class Slots:
    """The slots of one server (a ``custom_pool`` may be shared with other servers; only
    this server's own connections are evicted for this server's newcomers)."""

    def __init__(self, limiter: trio.CapacityLimiter, log: ServerLog) -> None:
        self._limiter = limiter
        self._log = log
        # Connections waiting for a request head to start, longest-waiting first (a dict
        # keeps insertion order: O(1) to add, remove and find the oldest).
        self._waiting: dict[Evictable, float] = {}
        self._more_waiting: trio.Event | None = None
        self.evictions = 0

    def waiting(self, connection: Evictable) -> None:
        """``connection`` starts waiting for a request head: it may be evicted."""
        self._waiting[connection] = trio.current_time()
        if self._more_waiting is not None:
            self._more_waiting.set()
            self._more_waiting = None

    def active(self, connection: Evictable) -> None:
        """``connection`` has bytes of a request (or is closing): no longer evictable."""
        self._waiting.pop(connection, None)

    def acquire_nowait(self, slot: object) -> bool:
        """Take a free slot for ``slot`` if there is one."""
        try:
            self._limiter.acquire_on_behalf_of_nowait(slot)
        except trio.WouldBlock:
            return False
        return True

    async def acquire(self, slot: object, listening: trio.socket.SocketType | None) -> None:
        """Take a slot for ``slot``, waiting if none is free. Meanwhile, once a client is
        waiting on ``listening`` (when there is a socket to watch), the longest-waiting
        idle or silent connection is evicted to make room for it."""
        if self.acquire_nowait(slot):
            return
        if listening is None:
            await self._limiter.acquire_on_behalf_of(slot)
            return
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._make_room, listening)
            await self._limiter.acquire_on_behalf_of(slot)
            nursery.cancel_scope.cancel()

    def release(self, slot: object) -> None:
        self._limiter.release_on_behalf_of(slot)

    async def _make_room(self, listening: trio.socket.SocketType) -> None:
        # Readable: a connection is complete in the backlog, waiting for accept().
        await trio.lowlevel.wait_readable(listening)
        while not self._waiting:
            if self._more_waiting is None:
                self._more_waiting = trio.Event()
            await self._more_waiting.wait()
        victim, since = next(iter(self._waiting.items()))
        del self._waiting[victim]
        self.evictions += 1
        self._log.debug(
            f"all connection slots taken: closing the connection from {victim.peer}, "
            f"idle for {trio.current_time() - since:.1f} s, to admit a new client"
        )
        victim.evict()
