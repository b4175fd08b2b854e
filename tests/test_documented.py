"""Every documented promise of asyncio's sleep, gather and queues, as a
parity test: each body runs on stock asyncio and on rustasync (``mod``), on
the stock loop and on uvloop (``run``), and each docstring quotes the
sentence it checks (Python 3.11-3.13 documentation and docstrings).

Sentences already proven elsewhere are listed in comments with the test
that covers them, rather than tested twice.
"""

from __future__ import annotations

import asyncio
import math
import sys
import types

import pytest
from queue_impls import RUST, STOCK

import rustasync

MODS = {
    "asyncio": types.SimpleNamespace(
        name="asyncio", sleep=asyncio.sleep, gather=asyncio.gather, q=STOCK
    ),
    "rustasync": types.SimpleNamespace(
        name="rustasync", sleep=rustasync.sleep, gather=rustasync.gather, q=RUST
    ),
}


@pytest.fixture(params=list(MODS))
def mod(request) -> types.SimpleNamespace:
    return MODS[request.param]


def virtual(coro):
    with asyncio.Runner(loop_factory=rustasync.VirtualTimeLoop) as runner:
        return runner.run(coro)


# ------------------------------------------------------------------ sleep
# "Block for delay seconds."                -> test_sleep.py::test_waits_at_least_delay_on_loop_clock
# "If result is provided, it is returned to the caller when the coroutine
#  completes."                              -> test_sleep.py::test_returns_result
# cancellation of a sleeping task           -> test_sleep.py::test_cancel_while_sleeping_carries_message


@pytest.mark.parametrize("delay", [0, 0.001])
def test_sleep_always_suspends(mod, run, delay) -> None:
    """ "sleep() always suspends the current task, allowing other tasks to run." """

    async def main():
        order = []

        async def other():
            order.append("other")

        asyncio.ensure_future(other())
        order.append("before")
        await mod.sleep(delay)
        order.append("after")
        return order

    assert run(main()) == ["before", "other", "after"]


def test_sleep_zero_is_the_optimized_path(mod, run) -> None:
    """ "Setting the delay to 0 provides an optimized path to allow other
    tasks to run." (no timer is scheduled, no future is created)"""

    async def main():
        loop = asyncio.get_running_loop()
        calls = []
        for name in ("call_at", "call_later", "create_future"):
            orig = getattr(loop, name)

            def spy(*a, _orig=orig, _name=name, **k):
                calls.append(_name)
                return _orig(*a, **k)

            setattr(loop, name, spy)
        try:
            for _ in range(10):
                await mod.sleep(0)
            await mod.sleep(-1)
        finally:
            for name in ("call_at", "call_later", "create_future"):
                delattr(loop, name)
        return calls

    assert run(main()) == []


def test_sleep_nan_raises_value_error(mod) -> None:
    """3.13: "Raises ValueError if delay is nan." (rustasync raises it on
    every version, when sleep() is called.)"""
    if mod.name == "asyncio" and sys.version_info < (3, 13):
        pytest.skip("asyncio before 3.13 accepts NaN")

    async def main():
        with pytest.raises(ValueError):
            await mod.sleep(math.nan)

    asyncio.run(main())


# ----------------------------------------------------------------- gather
# "If all awaitables are completed successfully, the result is an aggregate
#  list of returned values. The order of result values corresponds to the
#  order of awaitables in aws."            -> test_gather.py::test_results_in_argument_order
# "If return_exceptions is False (default), the first raised exception is
#  immediately propagated to the task that awaits on gather(). Other
#  awaitables in the aws sequence won't be cancelled and will continue to
#  run."                                    -> test_gather.py::test_first_exception_propagates_others_keep_running
# "If return_exceptions is True, exceptions are treated the same as
#  successful results, and aggregated in the result list."
#                                           -> test_gather.py::test_return_exceptions_in_place
# "If gather() is cancelled, all submitted awaitables (that have not
#  completed yet) are also cancelled."      -> test_gather.py::test_cancel_gather_cancels_children


def test_gather_runs_concurrently(mod) -> None:
    """ "Run awaitable objects in the aws sequence concurrently." """

    async def main():
        loop = asyncio.get_running_loop()
        start = loop.time()

        async def child(d):
            await mod.sleep(d)
            return d

        res = await mod.gather(child(1), mod.sleep(2, 2), child(3), mod.sleep(1.5, 1.5))
        return res, loop.time() - start

    res, took = virtual(main())
    assert res == [1, 2, 3, 1.5]
    assert 3 <= took < 3.01


def test_gather_schedules_coroutines_as_tasks(mod, run) -> None:
    """ "If any awaitable in aws is a coroutine, it is automatically scheduled
    as a Task." """

    async def main():
        outer = asyncio.current_task()

        async def child():
            t = asyncio.current_task()
            return isinstance(t, asyncio.Task) and t is not outer

        return await mod.gather(child(), child())

    assert run(main()) == [True, True]


def test_gather_child_cancelled_is_like_cancelled_error(mod, run) -> None:
    """ "If any Task or Future from the aws sequence is cancelled, it is
    treated as if it raised CancelledError - the gather() call is not
    cancelled in this case. This is to prevent the cancellation of one
    submitted Task/Future to cause other Tasks/Futures to be cancelled." """

    async def main():
        async def child(v):
            await mod.sleep(0.01)
            return v

        a, b = asyncio.ensure_future(child("a")), asyncio.ensure_future(child("b"))
        g = mod.gather(a, b, mod.sleep(0.01, "s"))
        await mod.sleep(0)
        a.cancel()
        try:
            await g
            outcome = "result"
        except asyncio.CancelledError:
            outcome = "CancelledError"
        # The gather itself is not cancelled, and the siblings go on.
        return outcome, g.cancelled(), await b, b.cancelled()

    assert run(main()) == ("CancelledError", False, "b", False)


def test_gather_cancel_after_done_cancels_nothing(mod, run) -> None:
    """ "If return_exceptions is False, cancelling gather() after it has been
    marked done won't cancel any submitted awaitables. For instance, gather
    can be marked done after propagating an exception to the caller,
    therefore, calling gather.cancel() after catching an exception (raised
    by one of the awaitables) from gather won't cancel any other
    awaitables." """

    async def main():
        async def boom():
            raise KeyError("x")

        async def slow():
            await mod.sleep(0.005)
            return "slow"

        s = asyncio.ensure_future(slow())
        g = mod.gather(boom(), s, mod.sleep(0.005))
        try:
            await g
        except KeyError:
            pass
        return g.done(), g.cancel(), await s, s.cancelled()

    assert run(main()) == (True, False, "slow", False)


def test_gather_has_no_loop_parameter(mod, run) -> None:
    """ "Changed in version 3.10: Removed the loop parameter." """

    async def main():
        with pytest.raises(TypeError):
            mod.gather(loop=asyncio.get_running_loop())

    run(main())


# ----------------------------------------------------------------- queues
# "A first in, first out (FIFO) queue." / LIFO / priority order
#                                           -> test_queue.py::test_order
# "If maxsize is less than or equal to zero, the queue size is infinite."
# and full()/empty()/qsize()/maxsize        -> test_queue.py::test_sizes_and_bounds
# get(): "If queue is empty, wait until an item is available."
#                                           -> test_queue.py::test_getters_served_fifo
# get_nowait()/put_nowait() raising QueueEmpty/QueueFull
#                                           -> test_queue.py::test_get_nowait_empty, test_bad_input.py
# task_done(): "Raises ValueError if called more times than there were
#  items placed in the queue."             -> test_bad_input.py::queue_task_done_too_many
# shutdown(): blocked put()/get() callers raise QueueShutDown
#                                           -> test_queue.py::test_shutdown_wakes_all_waiters


@pytest.mark.parametrize("kind", ["Queue", "LifoQueue", "PriorityQueue"])
def test_put_blocks_at_maxsize_until_get(mod, run, kind) -> None:
    """ "If it is an integer greater than 0, then await put() blocks when the
    queue reaches maxsize until an item is removed by get()." """

    async def main():
        q = getattr(mod.q, kind)(2)
        await q.put(1)
        await q.put(2)
        t = asyncio.ensure_future(q.put(3))
        await mod.sleep(0.001)
        blocked = not t.done()
        got = await q.get()
        await mod.sleep(0)
        return blocked, got, t.done(), q.qsize()

    blocked, got, done, size = run(main())
    assert blocked and done and size == 2
    assert got == (2 if kind == "LifoQueue" else 1)


def test_full_never_true_with_maxsize_zero(mod, run) -> None:
    """ "If the queue was initialized with maxsize=0 (the default), then
    full() never returns True." """

    async def main():
        q = mod.q.Queue()
        seen = []
        for i in range(1000):
            q.put_nowait(i)
            seen.append(q.full())
        return any(seen), q.qsize()

    assert run(main()) == (False, 1000)


def test_join_counts_unfinished_tasks(mod, run) -> None:
    """join(): "The count of unfinished tasks goes up whenever an item is
    added to the queue. The count goes down whenever a consumer coroutine
    calls task_done() to indicate that the item was retrieved and all work
    on it is complete. When the count of unfinished tasks drops to zero,
    join() unblocks." """

    async def main():
        q = mod.q.Queue()
        await q.put(1)
        q.put_nowait(2)
        j = asyncio.ensure_future(q.join())
        states = []
        for _ in range(2):
            await q.get()
            await mod.sleep(0)
            states.append(j.done())
        q.task_done()
        await mod.sleep(0)
        states.append(j.done())
        q.task_done()
        await mod.sleep(0)
        states.append(j.done())
        # With nothing unfinished, join() returns at once.
        await q.join()
        return states

    assert run(main()) == [False, False, False, True]


def test_task_done_resumes_join_when_all_processed(mod, run) -> None:
    """task_done(): "If a join() is currently blocking, it will resume when
    all items have been processed (meaning that a task_done() call was
    received for every item that had been put() into the queue)." """

    async def main():
        q = mod.q.Queue()
        for i in range(3):
            q.put_nowait(i)
        waiters = [asyncio.ensure_future(q.join()) for _ in range(3)]
        for _ in range(3):
            q.get_nowait()
        q.task_done()
        q.task_done()
        await mod.sleep(0)
        before = [w.done() for w in waiters]
        q.task_done()
        await mod.sleep(0)
        return before, [w.done() for w in waiters]

    assert run(main()) == ([False] * 3, [True] * 3)


def needs_shutdown(mod) -> None:
    if not mod.q.has_shutdown:
        pytest.skip("stock asyncio has no Queue.shutdown here")


def test_shutdown_graceful_winds_down(mod, run) -> None:
    """shutdown(): "The queue can no longer grow. Future calls to put()
    raise QueueShutDown. [...] If immediate is false (the default), the
    queue can be wound down normally with get() calls to extract tasks that
    have already been loaded. And if task_done() is called for each
    remaining task, a pending join() will be unblocked normally. Once the
    queue is empty, future calls to get() will raise QueueShutDown." """
    needs_shutdown(mod)

    async def main():
        q = mod.q.Queue()
        for i in range(3):
            q.put_nowait(i)
        j = asyncio.ensure_future(q.join())
        q.shutdown()
        out = []
        try:
            await q.put(9)
        except mod.q.QueueShutDown:
            out.append("put refused")
        while True:
            try:
                out.append(await q.get())
            except mod.q.QueueShutDown:
                out.append("get refused")
                break
            await mod.sleep(0)
            out.append(j.done())
            q.task_done()
        await mod.sleep(0)
        out.append(j.done())
        return out

    assert run(main()) == ["put refused", 0, False, 1, False, 2, False, "get refused", True]


def test_shutdown_immediate_drains_and_counts_done(mod, run) -> None:
    """task_done(): "shutdown(immediate=True) calls task_done() for each
    remaining item in the queue." shutdown(): "If immediate is true, the
    queue is terminated immediately. The queue is drained to be completely
    empty and the count of unfinished tasks is reduced by the number of
    tasks drained. If unfinished tasks is zero, callers of join() are
    unblocked. Also, blocked callers of get() are unblocked and will raise
    QueueShutDown because the queue is empty." """
    needs_shutdown(mod)

    async def main():
        q = mod.q.Queue()
        empty_q = mod.q.Queue()
        for i in range(3):
            q.put_nowait(i)
        q.get_nowait()  # one item out, not marked done: join still waits for it
        j = asyncio.ensure_future(q.join())
        g = asyncio.ensure_future(empty_q.get())
        await mod.sleep(0)
        q.shutdown(immediate=True)
        empty_q.shutdown(immediate=True)
        await mod.sleep(0)
        out = [q.qsize(), j.done(), g.done() and type(g.exception()).__name__]
        q.task_done()
        await mod.sleep(0)
        out.append(j.done())
        try:
            q.task_done()
        except ValueError:
            out.append("ValueError")
        return out

    assert run(main()) == [0, False, "QueueShutDown", True, "ValueError"]


def test_priority_entries_are_tuples(mod, run) -> None:
    """PriorityQueue: "Entries are typically tuples of the form
    (priority_number, data)." """

    async def main():
        q = mod.q.PriorityQueue()
        for entry in [(3, "c"), (1, "a"), (2, "b"), (1, "A"), (0, "z")]:
            await q.put(entry)
        return [q.get_nowait() for _ in range(q.qsize())]

    assert run(main()) == [(0, "z"), (1, "A"), (1, "a"), (2, "b"), (3, "c")]


def test_queue_has_no_loop_parameter(mod) -> None:
    """ "Changed in version 3.10: Removed the loop parameter." """
    with pytest.raises(TypeError):
        mod.q.Queue(loop=None)


async def worker_example(mod):
    async def worker(name, queue, done):
        while True:
            sleep_for = await queue.get()
            await mod.sleep(sleep_for)
            queue.task_done()
            done.append((name, sleep_for))

    queue = mod.q.Queue()
    for i in range(20):
        queue.put_nowait((i * 7 % 10 + 1) / 10)
    done = []
    tasks = [asyncio.create_task(worker(f"worker-{i}", queue, done)) for i in range(3)]
    loop = asyncio.get_running_loop()
    started = loop.time()
    await queue.join()
    took = loop.time() - started
    for task in tasks:
        task.cancel()
    res = await mod.gather(*tasks, return_exceptions=True)
    return done, round(took, 6), [type(r).__name__ for r in res]


def test_documented_worker_example() -> None:
    """The example in the queue documentation: workers take items, sleep,
    call task_done(); `await queue.join()` waits for all of them; the
    workers are then cancelled and gathered with return_exceptions=True.
    Same trace, same (virtual) time on both."""
    stock = virtual(worker_example(MODS["asyncio"]))
    rust = virtual(worker_example(MODS["rustasync"]))
    assert rust == stock
    assert len(rust[0]) == 20 and rust[2] == ["CancelledError"] * 3
