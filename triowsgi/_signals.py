"""SIGINT and SIGTERM for a server that is the whole program.

A program that is just a server (``trio.run(triowsgi.serve, app, 8090)``, the blocking
``server()``, the ``triowsgi`` command) stops as servers do: the first SIGTERM (what
``docker stop``, systemd and Kubernetes send) or SIGINT (Ctrl-C) begins the graceful
shutdown, a second one ends the grace period at once, and the program then ends
normally, with no traceback. Inside a larger Trio program signals belong to that
program, and a library leaves them alone.

The signals are received with ``trio.open_signal_receiver`` rather than left to become
a KeyboardInterrupt: that would land in whichever task runs when it comes (a
connection's, mid-request) instead of cancelling the server. The receiver installs its
handler whatever the previous one was, so a server started in the background by a shell,
which starts with SIGINT ignored, still stops on SIGINT.
"""

from __future__ import annotations

import enum
import signal
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Final, final

import trio

from ._logging import ServerLog, pid_prefix
from ._shutdown import Shutdown

__all__ = ["SHUTDOWN_SIGNALS", "Stop", "owns_the_process", "serve_until_signalled"]

SHUTDOWN_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM)


class Stop(enum.Enum):
    """How a server run by :func:`serve_until_signalled` ended."""

    NO_SIGNAL = "no signal"  # it returned or its caller cancelled it
    GRACEFUL = "graceful"  # a signal began the graceful shutdown
    FORCED = "forced"  # a second signal ended the grace period


def owns_the_process() -> bool:
    """Whether the calling task is all the program is: the main task of ``trio.run``
    (a child of the run's root task), on the main thread, with no nursery of its own
    open, so with no task of the program running beside it."""
    if threading.current_thread() is not threading.main_thread():
        return False
    task = trio.lowlevel.current_task()
    parent = task.parent_nursery
    return (
        parent is not None
        and parent.parent_task is trio.lowlevel.current_root_task()
        and not task.child_nurseries
    )


async def serve_until_signalled(
    serve: Callable[[Shutdown], Awaitable[object]],
    log: ServerLog,
    handle_signals: bool | None = None,
) -> Stop:
    """Run ``serve(shutdown)``, a server that shuts down gracefully when cancelled and
    whose grace period ``shutdown.end_now()`` ends, handling SIGINT and SIGTERM.

    ``handle_signals`` None decides by :func:`owns_the_process`; False runs ``serve``
    and leaves signals alone. The signals are caught from before ``serve`` starts: a
    supervisor may signal as soon as it reads the start-up line.
    """
    shutdown = Shutdown()
    if not (owns_the_process() if handle_signals is None else handle_signals):
        await serve(shutdown)
        return Stop.NO_SIGNAL
    watcher = _Watcher(shutdown, log)
    with trio.open_signal_receiver(*SHUTDOWN_SIGNALS) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watcher.watch, signals)
            try:
                with watcher.serving:
                    await serve(shutdown)
            finally:
                watcher.watching.cancel()
    return watcher.stop


@final
class _Watcher:
    def __init__(self, shutdown: Shutdown, log: ServerLog) -> None:
        self.serving = trio.CancelScope()
        # Shielded: if the caller cancels the server, the grace period it then gets is
        # still the signals' to end; a signal left unread would be redelivered (as a
        # KeyboardInterrupt, or a SIGTERM that kills) when the receiver closes.
        self.watching = trio.CancelScope(shield=True)
        self.stop = Stop.NO_SIGNAL
        self._shutdown = shutdown
        self._log = log

    async def watch(self, signals: AsyncIterator[int]) -> None:
        with self.watching:
            async for signum in signals:
                self._received(signal.Signals(signum).name)

    def _received(self, name: str) -> None:
        if self.stop is Stop.NO_SIGNAL:
            self.stop = Stop.GRACEFUL
            self._log.info(f"{pid_prefix()} {name}: shutting down gracefully")
            self.serving.cancel()
        else:
            self.stop = Stop.FORCED
            self._log.info(f"{pid_prefix()} {name} again: ending the grace period now")
            self._shutdown.end_now()
