"""An event loop whose clock jumps to the next timer instead of waiting for it.

`VirtualTimeLoop` is an ordinary selector event loop except for its clock:
`loop.time()` starts at 0.0 and only moves when the loop would otherwise sit
idle waiting for a timer. Then, after checking (without blocking) that no
I/O is ready, it sets the clock to the deadline of the earliest timer and
runs it at once. A program made of sleeps and timeouts therefore runs in
however long its callbacks take, while observing the same order of events,
and the same `loop.time()` readings, as it would in real time.

Everything scheduled through the loop follows the virtual clock:
`call_later`, `call_at`, `asyncio.sleep`, `asyncio.timeout`,
`asyncio.wait_for`, and rustasync's sleeps. Clocks read directly --
`time.monotonic()`, `time.perf_counter()`, `time.time()` -- are not touched.

Timers due at the same instant run in the order they were scheduled, which
is the order real time gives them (a later `call_at` reads a later clock).

While work submitted with `run_in_executor` / `asyncio.to_thread` is in
flight, the clock does not jump: it runs at real speed until the work reports
back or the next timer falls due. With no timers pending and nothing ready,
the loop blocks on its selector as usual, so real I/O and
`call_soon_threadsafe` wake it. Other waits on the outside world (sockets,
pipes, subprocesses) do not hold the clock back: a timeout around them fires
as soon as the loop has nothing else to do.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import selectors
import time
import weakref
from typing import Any

__all__ = ["VirtualTimeLoop"]

# The longest a selector may block; the stdlib loop uses the same bound.
_MAX_SELECT_TIMEOUT = 24 * 3600


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
    """A selector event loop on a virtual clock that jumps to the next timer.

    Like `asyncio.SelectorEventLoop`; differences: `time()` is virtual (it
    starts at `start`, 0.0 by default) and skips ahead to the next timer's
    deadline whenever no callback is ready and no I/O is ready. Use it as a
    loop factory: `asyncio.Runner(loop_factory=rustasync.VirtualTimeLoop)`,
    or `rustasync.run(main(), virtual_time=True)`.
    """

    def __init__(self, selector: Any = None, *, start: float = 0.0) -> None:
        self._virtual_now = float(start)
        self._timer_seq = itertools.count()
        self._executor_jobs = 0
        self._jump_to: float | None = None
        super().__init__(selector)
        self._selector = _ClockedSelector(self._selector, self)

    def time(self) -> float:
        """The virtual clock, in seconds."""
        return self._virtual_now

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

    def run_in_executor(self, executor: Any, func: Any, *args: Any) -> asyncio.Future[Any]:
        """Like `BaseEventLoop.run_in_executor`; the clock waits for the job."""
        future = super().run_in_executor(executor, func, *args)
        self._executor_jobs += 1
        future.add_done_callback(self._executor_job_done)
        return future

    def _executor_job_done(self, _future: asyncio.Future[Any]) -> None:
        self._executor_jobs -= 1

    async def shutdown_default_executor(self, timeout: float | None = None) -> None:
        """Like `BaseEventLoop.shutdown_default_executor`, without the timeout.

        The timeout is meant in real seconds; on a virtual clock it would
        expire the moment the loop waits for the executor's threads.
        """
        await super().shutdown_default_executor()

    def _run_once(self) -> None:
        if not self._ready and not self._stopping:
            self._jump_to = self._next_deadline()
        try:
            super()._run_once()
        finally:
            self._jump_to = None

    def _next_deadline(self) -> float | None:
        """The deadline to jump to if the coming poll finds no I/O, if any."""
        scheduled = self._scheduled
        while scheduled and scheduled[0]._cancelled:
            self._timer_cancelled_count -= 1
            heapq.heappop(scheduled)._scheduled = False
        if not scheduled:
            return None  # nothing to jump to: block on the selector like any loop
        when = scheduled[0]._when
        if when <= self._virtual_now or not math.isfinite(when):
            return None
        return when

    def _select(self, selector: selectors.BaseSelector, timeout: float | None) -> list[Any]:
        """The loop's poll for I/O, where the clock moves."""
        when, self._jump_to = self._jump_to, None
        if when is None:
            return selector.select(timeout)
        if self._executor_jobs:
            # Threads are working for us: let the clock run at real speed
            # until one of them reports back or the timer falls due.
            began = time.monotonic()
            events = selector.select(min(when - self._virtual_now, _MAX_SELECT_TIMEOUT))
            if events:
                waited = time.monotonic() - began
                self._virtual_now = min(when, self._virtual_now + waited)
            else:
                self._virtual_now = when
            return events
        # Whatever is ready now happens before the timer, as in real time.
        events = selector.select(0)
        if not events:
            self._virtual_now = when
        return events


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
