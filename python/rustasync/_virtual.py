"""An event loop whose clock skips the waits in which nothing can happen.

`VirtualTimeLoop` is an ordinary selector event loop except for its clock.
The loop alternates between *waits*, where nothing is ready and it would
block in its selector, and *bursts* of work (everything else). Its clock,
`loop.time()`, starts at `start` (0.0) and:

- skips a wait when nothing can end it but the next timer: no executor job
  is in flight, the next timer's deadline is finite, and a poll of the
  selector, without blocking, finds no I/O. The clock is set to the deadline
  and the loop goes on at once;
- runs at real speed through every other wait, which the loop spends
  blocked as any loop does (for I/O, for `call_soon_threadsafe`, for
  executor work, for a timer while executor work is in flight);
- stands still for the first `grace` real seconds (0.1 by default) of each
  burst and runs at real speed for the rest of it, so ordinary callbacks
  take no virtual time, yet a loop that never waits (a `sleep(0)` poll, a
  CPU-bound callback) sees its timers fall due;
- runs at real speed, with no grace, while executor work is in flight: from
  `run_in_executor` (and so `asyncio.to_thread`) until the job has finished
  in its thread, whether or not its asyncio future was cancelled meanwhile,
  and during `shutdown_default_executor`;
- stands still while the loop is not running.

A virtual run is therefore a real run in which every skipped wait ended
exactly at its deadline with nothing arriving from outside, and every burst
without executor work took `grace` less than it did (no time at all if it
was shorter). Its order of events is the real-time order of any program
whose order depends neither on such outside arrivals nor on timing
differences below `grace`; see docs/running.md.

Timers due at the same instant run in the order they were scheduled.
Clocks read directly -- `time.monotonic()`, `time.perf_counter()`,
`time.time()` -- are not touched.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import heapq
import itertools
import math
import selectors
import threading
import time
import weakref
from typing import Any

__all__ = ["VirtualTimeLoop"]


class _OrderedTimerHandle(asyncio.TimerHandle):
    """A timer that breaks ties between equal deadlines by scheduling order."""

    __slots__ = ("_seq",)

    def __init__(self, when: float, seq: int, callback: Any, args: Any, loop: Any, context: Any):
        super().__init__(when, callback, args, loop, context)
        self._seq = seq

    def _key(self) -> tuple[float, int]:
        return (self._when, self._seq)

    def __lt__(self, other: object) -> bool:
        if isinstance(other, _OrderedTimerHandle):
            return self._key() < other._key()
        return super().__lt__(other)

    def __le__(self, other: object) -> bool:
        if isinstance(other, _OrderedTimerHandle):
            return self._key() <= other._key()
        return super().__le__(other)

    def __gt__(self, other: object) -> bool:
        if isinstance(other, _OrderedTimerHandle):
            return self._key() > other._key()
        return super().__gt__(other)

    def __ge__(self, other: object) -> bool:
        if isinstance(other, _OrderedTimerHandle):
            return self._key() >= other._key()
        return super().__ge__(other)

    # TimerHandle defines __eq__, and a class that overrides comparisons must
    # say again that it keeps the inherited hash.
    __hash__ = asyncio.TimerHandle.__hash__


class VirtualTimeLoop(asyncio.SelectorEventLoop):  # type: ignore[misc,valid-type]
    """A selector event loop on a virtual clock that skips idle waits.

    Like `asyncio.SelectorEventLoop`; differences: `time()` is virtual. It
    starts at `start` and jumps to the next timer's deadline whenever the
    loop would wait for that timer with nothing else able to happen (no
    callback ready, no I/O ready, no executor job in flight). Otherwise it
    runs at real speed, except that it stands still for the first `grace`
    real seconds of each burst of work between two waits. Executor work
    (`run_in_executor`, `asyncio.to_thread`) holds the clock at real speed
    until the job has finished in its thread. The clock stands still while
    the loop is not running.

    Use it as a loop factory:
    `asyncio.Runner(loop_factory=rustasync.VirtualTimeLoop)`, or
    `rustasync.run(main(), virtual_time=True)`.

    Raises:
        ValueError: if `grace` is negative or not a number.
    """

    def __init__(self, selector: Any = None, *, start: float = 0.0, grace: float = 0.1) -> None:
        # The clock read `_clock` at real (monotonic) time `_anchor`, and since
        # then runs at real speed if `_real_speed`, else after `_grace`.
        self._clock = 0.0
        self._anchor = time.monotonic()
        self._real_speed = False
        self._clock_stopped = True
        # Executor jobs in flight (finished ones are counted down from their
        # worker thread, hence the lock).
        self._jobs = 0
        self._jobs_lock = threading.Lock()
        self._timer_seq = itertools.count()
        super().__init__(selector)
        self._selector = _ClockedSelector(self._selector, self)
        try:
            self._clock = float(start)
            self._grace = _grace_seconds(grace)
        except (TypeError, ValueError):
            self.close()
            raise

    # -- the clock --------------------------------------------------------------------------

    def time(self) -> float:
        """The virtual clock, in seconds."""
        if self._clock_stopped:
            return self._clock
        return self._reading(time.monotonic())

    def _reading(self, now: float) -> float:
        elapsed = now - self._anchor
        if not self._real_speed:
            elapsed -= self._grace
            if elapsed <= 0.0:
                return self._clock
        return self._clock + elapsed

    def _reanchor(self, real_speed: bool, at_least: float | None = None) -> None:
        """Carry the clock's reading over to now and change how it runs on.

        With `real_speed` False a new burst begins: the clock stands still
        for its grace. `at_least` moves the clock forward to a deadline.
        """
        now = time.monotonic()
        reading = self._clock if self._clock_stopped else self._reading(now)
        if at_least is not None and at_least > reading:
            reading = at_least
        self._clock, self._anchor, self._real_speed = reading, now, real_speed

    def run_forever(self) -> None:
        """Like `BaseEventLoop.run_forever`; the clock runs only meanwhile."""
        if self.is_running():
            super().run_forever()  # raises: already running
            return
        self._reanchor(bool(self._jobs))
        self._clock_stopped = False
        try:
            super().run_forever()
        finally:
            self._reanchor(self._real_speed)
            self._clock_stopped = True

    def _run_once(self) -> None:
        if self._real_speed and not self._jobs:
            # The last executor job finished while the loop was busy: the
            # rest of this burst has its grace.
            self._reanchor(False)
        super()._run_once()

    def _select(self, selector: selectors.BaseSelector, timeout: float | None) -> list[Any]:
        """The loop's poll for I/O, where it waits and where the clock jumps."""
        if timeout is not None and timeout <= 0:
            return selector.select(timeout)  # callbacks are ready: no wait
        if timeout is not None and not self._jobs and self._scheduled:
            # Only the next timer can end this wait (base_events has dropped
            # cancelled timers from the head of the heap).
            when = self._scheduled[0]._when
            if math.isfinite(when):
                # Whatever is ready now happens before the timer, as in real
                # time; a burst goes on through it.
                events = selector.select(0)
                if not events:
                    self._reanchor(False, at_least=when)
                return events
        self._reanchor(True)
        try:
            return selector.select(timeout)
        finally:
            self._reanchor(bool(self._jobs))

    # -- executor work holds the clock ------------------------------------------------------

    def _hold_clock(self) -> None:
        with self._jobs_lock:
            self._jobs += 1
        if not self._real_speed:
            self._reanchor(True)

    def _release_clock(self, _job: object = None) -> None:
        """Count a job as finished; called from the thread that finished it."""
        with self._jobs_lock:
            self._jobs -= 1
            last = not self._jobs
        if last:
            # Wake the loop if it waits at real speed for the job: it may now
            # skip the rest of its wait.
            self._write_to_self()

    def run_in_executor(self, executor: Any, func: Any, *args: Any) -> asyncio.Future[Any]:
        """Like `BaseEventLoop.run_in_executor`; the clock runs at real speed
        until the job has finished, even if the returned future is cancelled."""
        self._check_closed()
        if self._debug:
            self._check_callback(func, "run_in_executor")
        if executor is None:
            executor = self._default_executor
            self._check_default_executor()
            if executor is None:
                executor = concurrent.futures.ThreadPoolExecutor(thread_name_prefix="asyncio")
                self._default_executor = executor
        # Held from before the job can start, so that the clock counts all of it.
        self._hold_clock()
        try:
            job = executor.submit(func, *args)
        except BaseException:
            self._release_clock()
            raise
        future = asyncio.wrap_future(job, loop=self)
        # After wrap_future's own callback: the job's result is on its way to
        # the loop before the clock may jump.
        job.add_done_callback(self._release_clock)
        return future

    async def shutdown_default_executor(self, timeout: float | None = None) -> None:
        """Like `BaseEventLoop.shutdown_default_executor`; the clock runs at
        real speed while the executor's threads finish, so `timeout` (Python
        3.12+) counts real seconds, as on any loop."""
        if self._default_executor is None:
            await super().shutdown_default_executor()
            return
        self._hold_clock()
        try:
            if timeout is None:
                await super().shutdown_default_executor()
            else:
                await super().shutdown_default_executor(timeout)
        finally:
            self._release_clock()

    # -- timers -----------------------------------------------------------------------------

    def call_at(
        self, when: float, callback: Any, *args: Any, context: Any = None
    ) -> asyncio.TimerHandle:
        """Like `BaseEventLoop.call_at`, with ties broken by scheduling order."""
        if when is None:
            raise TypeError("when cannot be None")
        self._check_closed()
        if self._debug:
            self._check_thread()
            self._check_callback(callback, "call_at")
        timer = _OrderedTimerHandle(when, next(self._timer_seq), callback, args, self, context)
        if timer._source_traceback:
            del timer._source_traceback[-1]
        heapq.heappush(self._scheduled, timer)
        timer._scheduled = True
        return timer


def _grace_seconds(grace: object) -> float:
    try:
        seconds = float(grace)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        seconds = math.nan
    if not seconds >= 0.0:
        raise ValueError(f"grace must be a non-negative number of seconds, not {grace!r}")
    return seconds


class _ClockedSelector:
    """A selector whose select() lets the virtual loop move its clock."""

    def __init__(self, selector: selectors.BaseSelector, loop: VirtualTimeLoop) -> None:
        self._selector = selector
        self._loop = weakref.ref(loop)

    def select(self, timeout: float | None = None) -> list[Any]:
        loop = self._loop()
        if loop is None:
            return self._selector.select(timeout)
        return loop._select(self._selector, timeout)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._selector, name)
