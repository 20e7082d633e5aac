"""Connection slots: the ``max_size`` (or ``custom_pool``) tokens a connection holds from
accept to close, and the connections that hold one while waiting for a request head.

A connection that is waiting for a request head to start (idle between keep-alive
requests, or connected and silent since the accept) costs the server a slot and gives
nothing back. Two things end that wait here, for every such connection of the server:

- When every slot is taken and a client is waiting to be accepted, the one that has
  waited longest is closed to admit the newcomer, as nginx reuses its idle connections:
  a flood of silent connections then cycles through the slots instead of locking
  everyone out. Only connections in the middle of a request make newcomers wait in the
  kernel's backlog.
- Its deadline (the idle limit, or the first head's): one task, :meth:`Slots.expire`,
  closes each connection whose deadline passed. A cancel scope per wait would do the
  same, but it is most of the memory an idle connection costs beyond its frames (about
  0.9 KB: the scope, its status and two sets, the deadline's heap entry) and a few us of
  CPU on every request that waits.
"""

from __future__ import annotations

import math
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

    @property
    def expired(self) -> bool:
        """Whether :meth:`expire` closed it."""
        ...

    def evict(self) -> None:
        """Close the connection now; its task ends quietly and releases its slot."""

    def expire(self) -> None:
        """Close the connection now: it waited for a request head past its deadline."""


# (waiting since, deadline) of a waiting connection.
_Wait = tuple[float, float]


@final
class Slots:
    """The slots of one server (a ``custom_pool`` may be shared with other servers; only
    this server's own connections are evicted for this server's newcomers)."""

    def __init__(self, limiter: trio.CapacityLimiter, log: ServerLog) -> None:
        self._limiter = limiter
        self._log = log
        # Connections waiting for a request head, in the order they began to wait (a dict
        # keeps insertion order: O(1) to add, remove and find the oldest): those waiting
        # for their first head, and those between requests, whose deadlines follow that
        # order too (so the first entry's is the nearest); and those whose deadline
        # came out of order, which end their wait themselves.
        self._first: dict[Evictable, _Wait] = {}
        self._later: dict[Evictable, _Wait] = {}
        self._unreaped: dict[Evictable, _Wait] = {}
        self._more_waiting: trio.Event | None = None
        # When expire() wakes next, and the event that wakes it sooner.
        self._wake_at = math.inf
        self._wake = trio.Event()
        self.evictions = 0

    def waiting(self, connection: Evictable, deadline: float, *, first: bool) -> bool:
        """``connection`` starts waiting for a request head (its ``first``, or one
        between requests): it may be evicted. Whether :meth:`expire` will close it at
        ``deadline``; if not (its deadline would come before one of those that began to
        wait earlier), the caller must end the wait itself by then."""
        queue = self._first if first else self._later
        last = next(reversed(queue.values()), None)
        reaped = last is None or deadline >= last[1]
        if not reaped:
            queue = self._unreaped
        queue[connection] = (trio.current_time(), deadline)
        if reaped and deadline < self._wake_at:
            self._wake_at = deadline
            self._wake.set()
        if self._more_waiting is not None:
            self._more_waiting.set()
            self._more_waiting = None
        return reaped

    def active(self, connection: Evictable) -> None:
        """``connection`` has bytes of a request (or is closing): no longer waiting."""
        for queue in (self._later, self._first, self._unreaped):
            if queue.pop(connection, None) is not None:
                return

    async def expire(self) -> None:
        """Close each waiting connection once its deadline passes; runs until cancelled
        (for as long as the server has connections)."""
        while True:
            now = trio.current_time()
            for queue in (self._first, self._later):
                while queue:
                    connection, (_, deadline) = next(iter(queue.items()))
                    if deadline > now:
                        break
                    del queue[connection]
                    connection.expire()
            self._wake_at = min(_next_deadline(self._first), _next_deadline(self._later))
            self._wake = trio.Event()
            with trio.move_on_at(self._wake_at):
                await self._wake.wait()

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
        while not (queues := [q for q in (self._first, self._later, self._unreaped) if q]):
            if self._more_waiting is None:
                self._more_waiting = trio.Event()
            await self._more_waiting.wait()
        queue = min(queues, key=_first_since)
        victim, (since, _) = next(iter(queue.items()))
        del queue[victim]
        self.evictions += 1
        self._log.debug(
            f"all connection slots taken: closing the connection from {victim.peer}, "
            f"idle for {trio.current_time() - since:.1f} s, to admit a new client"
        )
        victim.evict()


def _next_deadline(queue: dict[Evictable, _Wait]) -> float:
    return next(iter(queue.values()), (0.0, math.inf))[1]


def _first_since(queue: dict[Evictable, _Wait]) -> float:
    return next(iter(queue.values()))[0]
