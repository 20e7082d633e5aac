"""The worker threads that run the app: a pool with one shared job queue.

``trio.to_thread.run_sync`` wakes one particular cached thread per call and goes through
a limiter and several checkpoints: about 40 us of CPU per round trip on this kind of
machine, most of a hello-world request's budget. Here a busy worker takes the next job
straight from the queue without sleeping, and the result goes back to the waiting task
with one ``run_sync_soon``: about 7 us (measured with 128 concurrent tasks on one core;
see bench/NOTES.md).

A job's thread that waits on its client (the app reads a body that is still on its way,
or writes to a client that is not reading) gives its place back for the wait: eventlet
serves a thousand slow uploads with a green thread each, and here they must not take
every place from the requests behind them. The wait itself runs in Trio; the thread only
blocks. When the bytes are there, the thread takes a place again, before any queued job
(it is in the middle of a request that is further along). A connection runs one app
call at a time, so at most one thread per connection is without a place.
"""

from __future__ import annotations

import collections
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

    def __call__(self, _: Any) -> Abort:
        """The abort function of the waiting task, called when it is cancelled: skip
        the call, or drop its result.

        The job itself, not a bound method: a call in flight is garbage-collector work
        for every object it holds (see :meth:`WorkerPool.run`)."""
        self.abandoned = True
        return Abort.SUCCEEDED


def _nothing() -> None:
    pass


# Put in the job queue to wake an idle thread: its place goes to a thread waiting for one.
_HAND_OVER: Final[Any] = object()


@final
class WorkerPool:
    """Runs blocking calls with at most ``max_threads`` of them running at once; more
    calls wait their turn. A call waiting on its client through :meth:`wait_on_client`
    does not count toward ``max_threads`` while it waits.

    Create it inside Trio (it keeps the run's token). A caller that is cancelled stops
    waiting at once and its call is abandoned: skipped if not started, its result
    dropped otherwise (as ``trio.to_thread.run_sync(abandon_on_cancel=True)``).
    """

    def __init__(self, max_threads: int) -> None:
        self.max_threads = max_threads
        self.token = current_trio_token()
        self._jobs: queue.SimpleQueue[_Job[Any]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0  # threads holding a place: idle, or running a job not waiting
        self._idle = 0
        self._queued = 0  # jobs put but not yet taken by a worker
        # Results waiting for the Trio thread: one run_sync_soon (one wake-up of the
        # Trio thread) delivers every result that finished before it ran.
        self._results: list[tuple[_Job[Any], outcome.Outcome[Any]]] = []
        self._delivery_pending = False
        # Job threads that waited on their client and wait for a place again, first come
        # first served; each blocks on its own locked lock until a place is handed to it.
        self._resumers: collections.deque[threading.Lock] = collections.deque()
        self._hand_overs = 0  # _HAND_OVER markers in the queue
        self._placeless = 0
        self._detached: set[int] = set()  # idents of threads whose job keeps no place

    def run(self, fn: Callable[..., T], *args: Any) -> Awaitable[T]:
        """``fn(*args)`` in a worker thread; await it for its result, or its exception
        re-raised. Await it at once: the call is queued when ``run`` is called.

        Not a coroutine function itself, so that a task waiting on a worker is a frame
        shallower (each resumption of a task passes through every frame it awaits in).

        Every object a call holds while it waits is the garbage collector's to visit:
        with a hundred requests in flight, Python's youngest generation fills with them
        and each collection walks them all, then promotes them (and the full
        collections that follow walk the app's whole heap). So a call makes as few
        objects as it can: pass functions and their arguments, not bound methods."""
        job: _Job[T] = _Job(fn, args, current_task())
        self._submit(job)
        return trio.lowlevel.wait_task_rescheduled(job)

    @property
    def saturated(self) -> bool:
        """Whether a call is waiting with every thread busy (a hint: read unlocked)."""
        return self._threads >= self.max_threads and self._queued > self._idle

    @property
    def placeless(self) -> int:
        """Job threads without a place: waiting on their client, or for a place back."""
        return self._placeless

    def wait_on_client(self, afn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """In a job's thread: ``await afn(*args, release)`` in Trio, and its result.

        ``afn`` calls ``release()`` (in Trio, any number of times) just before it waits
        on the client: from then on this thread holds no place, and a queued call may
        run in its stead. If it did, the thread takes a place again before this returns
        or raises, waiting for one if none is free. A wait that needs no waiting (the
        bytes are already there) costs nothing more than ``trio.from_thread.run``."""
        call: Any = afn  # (trio's signature can't say that release comes last)
        if self._detached and threading.get_ident() in self._detached:
            # A detached thread has no place to give (see detach()).
            return trio.from_thread.run(call, *args, _nothing, trio_token=self.token)  # type: ignore[no-any-return]
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.release()

        try:
            return trio.from_thread.run(call, *args, release, trio_token=self.token)  # type: ignore[no-any-return]
        finally:
            if released:
                self.reacquire()

    def release(self) -> None:
        """The calling job's thread gives its place back (from any thread): to a thread
        waiting for one, or to a queued job. Pair it with :meth:`reacquire` in the job's
        thread."""
        with self._lock:
            self._placeless += 1
            start = False
            if self._resumers:
                self._resumers.popleft().release()  # the place goes straight to it
            else:
                self._threads -= 1
                start = self._queued > self._idle and self._threads < self.max_threads
                if start:
                    self._threads += 1
        if start:
            self._start_thread()

    def reacquire(self) -> None:
        """In a job's thread that released its place: block until it holds one again.
        Threads waiting here take places before queued jobs."""
        with self._lock:
            if self._threads < self.max_threads and not self._resumers:
                self._threads += 1
                self._placeless -= 1
                return
            waiter = threading.Lock()
            waiter.acquire()
            self._resumers.append(waiter)
            # An idle thread holds a place it is not using: wake one to hand it over.
            wake = self._idle > self._hand_overs
            if wake:
                self._hand_overs += 1
                self._queued += 1
                self._jobs.put(_HAND_OVER)
        waiter.acquire()  # released with a place handed over (the count moved with it)
        with self._lock:
            self._placeless -= 1

    def detach(self) -> None:
        """In a job's thread: give its place back for the rest of the job (the job has
        become a connection's handler and may wait for hours). The thread ends with
        the job."""
        ident = threading.get_ident()
        if ident not in self._detached:
            self._detached.add(ident)
            self.release()

    def _hand_over(self) -> bool:
        """With the lock held: give this thread's place to a waiting thread, if any (the
        caller then ends: threads without a job and without a place don't stay)."""
        if not self._resumers:
            return False
        self._resumers.popleft().release()
        return True

    def _submit(self, job: _Job[Any]) -> None:
        with self._lock:
            self._jobs.put(job)
            self._queued += 1
            start = self._queued > self._idle and self._threads < self.max_threads
            if start:
                self._threads += 1
        if start:
            self._start_thread()

    def _start_thread(self) -> None:
        threading.Thread(target=self._work, name=IDLE_NAME, daemon=True).start()

    def _work(self) -> None:
        thread = threading.current_thread()
        while True:
            with self._lock:
                if self._hand_over():
                    return
                self._idle += 1
            try:
                job = self._jobs.get(timeout=IDLE_SECONDS)
            except queue.Empty:
                with self._lock:
                    self._idle -= 1
                    if self._hand_over():
                        return
                    if not self._queued:
                        self._threads -= 1
                        return
                continue
            with self._lock:
                self._idle -= 1
                self._queued -= 1
                if job is _HAND_OVER:
                    self._hand_overs -= 1
                    if self._hand_over():
                        return
                    continue
            if job.abandoned:
                continue
            thread.name = BUSY_NAME
            result = outcome.capture(job.fn, *job.args)
            thread.name = IDLE_NAME
            job.fn = job.args = None  # type: ignore[assignment]  # drop references early
            leaving = bool(self._detached) and thread.ident in self._detached
            if leaving:
                # The job kept no place (detach()): this thread leaves the pool with it.
                self._detached.discard(thread.ident)
                with self._lock:
                    self._placeless -= 1
            self._finish(job, result)
            if leaving:
                return

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
