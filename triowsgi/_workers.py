"""The worker threads that run the app: a pool with one shared job queue.

``trio.to_thread.run_sync`` wakes one particular cached thread per call and goes through
a limiter and several checkpoints: about 40 us of CPU per round trip on this kind of
machine, most of a hello-world request's budget. Here a busy worker takes the next job
straight from the queue without sleeping, and the result goes back to the waiting task
with one ``run_sync_soon``: about 7 us (measured with 128 concurrent tasks on one core;
see bench/NOTES.md).
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Awaitable, Callable
from typing import Any, Final, Generic, TypeVar, final

import outcome
import trio
from trio.lowlevel import Abort, Task, current_task, current_trio_token, reschedule

__all__ = ["IDLE_NAME", "WorkerPool"]

T = TypeVar("T")

# A thread with no job for this long exits; the next burst starts new ones.
IDLE_SECONDS: Final = 10.0
BUSY_NAME: Final = "triowsgi worker"
IDLE_NAME: Final = "triowsgi worker (idle)"


@final
class _Job(Generic[T]):
    __slots__ = ("abandoned", "args", "fn", "task")

    def __init__(self, fn: Callable[..., T], args: tuple[Any, ...], task: Task) -> None:
        self.fn = fn
        self.args = args
        self.task = task
        self.abandoned = False

    def abort(self, _: Any) -> Abort:
        """The waiting task was cancelled: skip the call, or drop its result."""
        self.abandoned = True
        return Abort.SUCCEEDED


@final
class WorkerPool:
    """Runs blocking calls in at most ``max_threads`` threads; more calls wait their turn.

    Create it inside Trio (it keeps the run's token). A caller that is cancelled stops
    waiting at once and its call is abandoned: skipped if not started, its result
    dropped otherwise (as ``trio.to_thread.run_sync(abandon_on_cancel=True)``).
    """

    def __init__(self, max_threads: int) -> None:
        self.max_threads = max_threads
        self.token = current_trio_token()
        self._jobs: queue.SimpleQueue[_Job[Any]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0
        self._queued = 0  # jobs put but not yet taken by a worker
        # Results waiting for the Trio thread: one run_sync_soon (one wake-up of the
        # Trio thread) delivers every result that finished before it ran.
        self._results: list[tuple[_Job[Any], outcome.Outcome[Any]]] = []
        self._delivery_pending = False

    def run(self, fn: Callable[..., T], *args: Any) -> Awaitable[T]:
        """``fn(*args)`` in a worker thread; await it for its result, or its exception
        re-raised. Await it at once: the call is queued when ``run`` is called.

        Not a coroutine function itself, so that a task waiting on a worker is a frame
        shallower (each resumption of a task passes through every frame it awaits in)."""
        job: _Job[T] = _Job(fn, args, current_task())
        self._submit(job)
        return trio.lowlevel.wait_task_rescheduled(job.abort)

    @property
    def saturated(self) -> bool:
        """Whether a call is waiting with every thread busy (a hint: read unlocked)."""
        return self._threads >= self.max_threads and self._queued > self._idle

    def _submit(self, job: _Job[Any]) -> None:
        with self._lock:
            self._jobs.put(job)
            self._queued += 1
            start = self._queued > self._idle and self._threads < self.max_threads
            if start:
                self._threads += 1
        if start:
            threading.Thread(target=self._work, name=IDLE_NAME, daemon=True).start()

    def _work(self) -> None:
        thread = threading.current_thread()
        while True:
            with self._lock:
                self._idle += 1
            try:
                job = self._jobs.get(timeout=IDLE_SECONDS)
            except queue.Empty:
                with self._lock:
                    self._idle -= 1
                    if not self._queued:
                        self._threads -= 1
                        return
                continue
            with self._lock:
                self._idle -= 1
                self._queued -= 1
            if job.abandoned:
                continue
            thread.name = BUSY_NAME
            result = outcome.capture(job.fn, *job.args)
            thread.name = IDLE_NAME
            job.fn = job.args = None  # type: ignore[assignment]  # drop references early
            self._finish(job, result)

    def _finish(self, job: _Job[Any], result: outcome.Outcome[Any]) -> None:
        with self._lock:
            self._results.append((job, result))
            if self._delivery_pending:
                return
            self._delivery_pending = True
        # RunFinishedError: the server is gone and nobody is waiting.
        with contextlib.suppress(trio.RunFinishedError):
            self.token.run_sync_soon(self._deliver)

    def _deliver(self) -> None:
        with self._lock:
            results, self._results = self._results, []
            self._delivery_pending = False
        for job, result in results:
            if not job.abandoned:
                reschedule(job.task, result)
