"""rustasync.gather against asyncio.gather: one body, both implementations."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import re
import subprocess
import sys
import threading
import traceback
import types
import warnings
from pathlib import Path

import pytest
from _loops import RLOOP_HANDLER_SIGNATURE, skip_on_rloop
from _programs import start
from hypothesis import given, settings
from hypothesis import strategies as st

import rustasync

# Stock asyncio, for tests that compare a run on the implementation under
# test with a run on stock.
STOCK = types.SimpleNamespace(sleep=asyncio.sleep, gather=asyncio.gather)


async def value(v, delay=0.0):
    await asyncio.sleep(delay)
    return v


async def fail(exc, delay=0.0):
    await asyncio.sleep(delay)
    raise exc


def test_results_in_argument_order(impl, run):
    async def main():
        return await impl.gather(value(1, 0.003), value(2), value(3, 0.001))

    assert run(main()) == [1, 2, 3]


def test_mixed_children(impl, run):
    async def main():
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        loop.call_later(0.001, fut.set_result, "f")
        task = loop.create_task(value("t"))
        return await impl.gather(
            fut, task, value("c"), impl.sleep(0.001, "s"), asyncio.sleep(0, "a"), impl.sleep(0, "z")
        )

    assert run(main()) == ["f", "t", "c", "s", "a", "z"]


def test_empty_gather_is_done_future_of_empty_list(impl, run):
    async def main():
        g = impl.gather()
        assert asyncio.isfuture(g) and g.done()
        return await g

    assert run(main()) == []


def test_duplicates_are_awaited_once(impl, run):
    calls = []

    async def counted():
        calls.append(1)
        return "x"

    async def main():
        c = counted()
        s = impl.sleep(0.001, "s")
        return await impl.gather(c, c, s, s)

    assert run(main()) == ["x", "x", "s", "s"]
    assert calls == [1]


def test_first_exception_propagates_others_keep_running(impl, run):
    async def main():
        finished = []

        async def slow():
            await asyncio.sleep(0.01)
            finished.append("slow")
            return "slow"

        loop = asyncio.get_running_loop()
        slow_task = loop.create_task(slow())
        g = impl.gather(slow_task, fail(KeyError("k")), impl.sleep(0.005, "s"))
        with pytest.raises(KeyError):
            await g
        assert not slow_task.done()
        assert await slow_task == "slow"
        return finished, g.done(), type(g.exception())

    assert run(main()) == (["slow"], True, KeyError)


def test_return_exceptions_in_place(impl, run):
    async def main(impl=impl):
        loop = asyncio.get_running_loop()
        doomed = loop.create_task(impl.sleep(10))
        loop.call_later(0.001, doomed.cancel, "bye")
        res = await impl.gather(
            value(1), fail(ValueError("v")), doomed, impl.sleep(0.002, 4), return_exceptions=True
        )
        return [type(r).__name__ if isinstance(r, BaseException) else r for r in res], res[2].args

    names, cancel_args = run(main())
    assert names == [1, "ValueError", "CancelledError", 4]
    # The message stock asyncio keeps for a cancelled task differs between
    # versions; whatever it is, rustasync matches it.
    stock = asyncio.run(main(impl=STOCK))
    assert cancel_args == stock[1]


def test_failed_gather_traceback_does_not_grow(impl, run):
    """Raising a failed gather's exception again and again (awaits,
    `result()`) gives the same traceback each time after the first, and a
    second task sees only its own frames, as stock (regression: the stored
    exception was raised as is, its traceback growing by the frames of every
    earlier raise)."""

    async def boom():
        raise KeyError("k")

    def frames(e: BaseException) -> list[str]:
        return [f.name for f in traceback.extract_tb(e.__traceback__)]

    async def main():
        g = impl.gather(boom(), impl.sleep(0.001))
        seen = []
        for _ in range(3):
            try:
                await g
            except KeyError as e:
                seen.append(frames(e))
        for _ in range(2):
            try:
                g.result()
            except KeyError as e:
                seen.append(frames(e))

        async def second_waiter():
            try:
                await g
            except KeyError as e:
                return frames(e)

        seen.append(await asyncio.get_running_loop().create_task(second_waiter()))
        seen.append(frames(g.exception()))
        return seen

    assert run(main()) == [
        ["main", "boom"],
        ["main"],
        ["main"],
        ["main"],
        ["main"],
        ["second_waiter"],
        ["second_waiter"],
    ]


@pytest.mark.parametrize("return_exceptions", [False, True])
def test_cancel_gather_cancels_children(impl, run, return_exceptions):
    async def main():
        loop = asyncio.get_running_loop()
        t1 = loop.create_task(impl.sleep(10))
        sleeper = impl.sleep(10)
        g = impl.gather(t1, value(1, 10), sleeper, return_exceptions=return_exceptions)
        await asyncio.sleep(0.001)
        assert g.cancel("stop")
        with pytest.raises(asyncio.CancelledError) as ei:
            await g
        return t1.cancelled(), ei.value.args, g.done(), g.cancelled()

    t1_cancelled, args, done, cancelled = run(main())
    assert t1_cancelled and done and not cancelled
    assert args == ("stop",)


def test_cancel_task_awaiting_gather(impl, run):
    async def main():
        loop = asyncio.get_running_loop()
        child = loop.create_task(impl.sleep(10))

        async def waiter():
            return await impl.gather(child, impl.sleep(10))

        w = loop.create_task(waiter())
        await asyncio.sleep(0.001)
        w.cancel("outer")
        with pytest.raises(asyncio.CancelledError) as ei:
            await w
        return child.cancelled(), w.cancelled(), ei.value.args

    assert run(main()) == (True, True, ("outer",))


def test_child_cancelled_from_outside(impl, run):
    async def main():
        loop = asyncio.get_running_loop()
        child = loop.create_task(impl.sleep(10))
        other = loop.create_task(impl.sleep(0.01, "o"))
        g = impl.gather(child, other)
        await asyncio.sleep(0)
        child.cancel("from outside")
        with pytest.raises(asyncio.CancelledError) as ei:
            await g
        return ei.value.args, await other

    assert run(main()) == (("from outside",), "o")


async def stubborn(value, cleanup_steps=3):
    """A child that takes a few iterations to finish once cancelled."""
    try:
        await asyncio.sleep(10)
    except asyncio.CancelledError:
        for _ in range(cleanup_steps):
            await asyncio.sleep(0)
    return value


@pytest.mark.parametrize("return_exceptions", [False, True])
@pytest.mark.parametrize("hops", range(5))
def test_cancel_at_each_iteration_of_a_zero_sleep_child(impl, run, hops, return_exceptions):
    """Cancelling the gather `hops` iterations after it was created, while a
    `sleep(0)` child starts, yields, finishes and is reported, with a sibling
    that takes iterations to give up: the same outcome, in the same
    iteration, as stock (regression: cancelled in the iteration after its
    yield, the sleep child was reported twice; with `return_exceptions=True`
    the gather then read the unfinished sibling, the loop's handler got
    `InvalidStateError`, and the gather never completed)."""

    async def main(impl):
        loop = asyncio.get_running_loop()
        errors = []
        loop.set_exception_handler(lambda _, ctx: errors.append(repr(ctx.get("exception"))))
        g = impl.gather(impl.sleep(0, "z"), stubborn("s"), return_exceptions=return_exceptions)
        for _ in range(hops):
            await asyncio.sleep(0)
        accepted = g.cancel("c")
        iterations = 0
        while not g.done() and iterations < 50:
            await asyncio.sleep(0)
            iterations += 1
        if not g.done():
            return accepted, "never done", errors
        try:
            res = [r if isinstance(r, str) else type(r).__name__ for r in g.result()]
        except asyncio.CancelledError as e:
            res = ("CancelledError", e.args)
        return accepted, iterations, res, errors

    got = run(main(impl))
    assert got[-1] == [] and got[1] != "never done"
    assert got == run(main(STOCK))


def test_children_report_in_the_order_their_tasks_would(impl, run):
    """A Task child cancelled from outside, then the gather cancelled in the
    same iteration: stock wakes the sleep child's Task after the first
    child's, so the first child reports first and the gather raises its
    `CancelledError` (regression: the sleep child stepped in a callback
    scheduled an iteration earlier, ahead of the Task, and the gather raised
    the second message)."""

    async def main():
        t = asyncio.get_running_loop().create_task(impl.sleep(10))
        # The timer child must still be pending at the cancel (a 1 ms one can
        # fire first on a busy machine, and then uvloop reports "second").
        g = impl.gather(t, impl.sleep(0), impl.sleep(1))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        t.cancel("first")
        g.cancel("second")
        with pytest.raises(asyncio.CancelledError) as ei:
            await g
        return ei.value.args

    assert run(main()) == ("first",)


def test_cancel_asks_a_repeated_task_once_per_argument(impl, run):
    """asyncio cancels the children once per argument, so a Task given three
    times counts three cancellation requests (regression: rustasync asked it
    once)."""

    async def main():
        t = asyncio.get_running_loop().create_task(impl.sleep(10))
        g = impl.gather(t, impl.sleep(10), t, t)
        await asyncio.sleep(0)
        accepted = g.cancel()
        with pytest.raises(asyncio.CancelledError):
            await g
        return accepted, t.cancelling()

    assert run(main()) == (True, 3)


def test_cancel_after_done_returns_false(impl, run):
    async def main():
        g = impl.gather(value(1), impl.sleep(0, 2))
        assert await g == [1, 2]
        return g.cancel()

    assert run(main()) is False


def test_cancel_when_children_done_but_outer_pending(impl, run):
    async def main():
        loop = asyncio.get_running_loop()
        t = loop.create_task(value(1))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert t.done()
        g = impl.gather(t)
        # Python 3.11 reports the done child next iteration; 3.12+ at once.
        assert g.done() == (sys.version_info >= (3, 12))
        return g.cancel(), await g

    assert run(main()) == (False, [1])


def timer_entries(loop: asyncio.AbstractEventLoop) -> int:
    """The entries in a stock loop's timer heap, cancelled ones included;
    the handle that runs rustasync's timers counts as the entries of the
    per-loop timer heap behind it."""
    n = 0
    for handle in loop._scheduled:
        timers = handle._callback
        if type(timers).__name__ == "_LoopTimers" and not handle.cancelled():
            n += int(re.search(r"(\d+) pending", repr(timers))[1])
        else:
            n += 1
    return n


def test_cancelled_gathers_leave_no_timer_entries_behind(impl):
    """Cancelled sleep children count as cancelled timers, so the heap is
    compacted as stock's is (regression: 2,000 cancelled `sleep(3600)`
    children kept 2,000 heap entries until their deadlines)."""

    async def main():
        loop = asyncio.get_running_loop()
        for _ in range(20):
            gathers = [impl.gather(impl.sleep(3600), impl.sleep(3600)) for _ in range(50)]
            await impl.sleep(0.001)  # a sleep that fires in between
            for g in gathers:
                g.cancel()
            await asyncio.gather(*gathers, return_exceptions=True)
        return timer_entries(loop)

    assert asyncio.run(main()) < 100


def gather_outside_a_loop(impl, make_args) -> tuple[str, ...]:
    """What `gather(*make_args())` does with no running loop: its error, or
    the results once run on the loop it picked, and the warnings it gave."""
    args = make_args()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            g = impl.gather(*args)
        except Exception as e:  # noqa: BLE001
            outcome = (type(e).__name__, str(e))
        else:
            loop = g.get_loop()
            outcome = ("ran", repr(loop.run_until_complete(g)))
            loop.close()
    for a in args:  # stock leaves them unawaited
        if asyncio.iscoroutine(a):
            a.close()
    return outcome + tuple(f"{w.category.__name__}: {w.message} @ {w.filename}" for w in caught)


def future_of_a_new_loop(result):
    fut = asyncio.new_event_loop().create_future()
    fut.get_loop().call_soon(fut.set_result, result)
    return fut


NO_LOOP_CALLS = {
    "nothing": lambda impl: (),
    "coroutines": lambda impl: (value(1), value(2)),
    "sleeps": lambda impl: (impl.sleep(0, 1), impl.sleep(0.001, 2)),
    "a future first": lambda impl: (future_of_a_new_loop(0), value(1), impl.sleep(0, 2)),
}


@pytest.mark.parametrize("call", list(NO_LOOP_CALLS))
def test_no_loop_in_this_thread(impl, call):
    """No running loop and none set for the thread: the running Python's
    asyncio error (regression: rustasync raised its own "no running event
    loop", where CPython's tests expect "no current event loop")."""
    results = {}

    def in_thread():
        for name, ns in (("impl", impl), ("stock", STOCK)):
            results[name] = gather_outside_a_loop(ns, lambda ns=ns: NO_LOOP_CALLS[call](ns))

    t = threading.Thread(target=in_thread, name="no-loop")
    t.start()
    t.join()
    assert results["impl"] == results["stock"]
    if call == "a future first":
        assert results["impl"] == ("ran", "[0, 1, 2]")
    else:
        assert (
            results["impl"][0] == "RuntimeError" and "no current event loop" in results["impl"][1]
        )


@pytest.mark.parametrize("call", list(NO_LOOP_CALLS))
@pytest.mark.parametrize("loop_set", ["none", "never"])
def test_no_running_loop_in_the_main_thread(impl, call, loop_set):
    """No running loop in the main thread, with the loop set to None or
    never set: the error, or the loop, warning and results of the running
    Python's asyncio (3.11 and 3.12+ differ; the asyncio of the running
    interpreter is the reference)."""
    policy = asyncio.get_event_loop_policy()
    outcomes = []
    try:
        for ns in (impl, STOCK):
            asyncio.set_event_loop_policy(asyncio.DefaultEventLoopPolicy())
            if loop_set == "none":
                asyncio.set_event_loop(None)
            outcomes.append(gather_outside_a_loop(ns, lambda ns=ns: NO_LOOP_CALLS[call](ns)))
            loop = asyncio.get_event_loop_policy()._local._loop
            if loop is not None:
                loop.close()
    finally:
        asyncio.set_event_loop_policy(policy)
    assert outcomes[0] == outcomes[1]
    if loop_set == "none" and call != "a future first":
        assert outcomes[0][:2] == (
            "RuntimeError",
            "There is no current event loop in thread 'MainThread'.",
        )


def test_not_awaitable_is_type_error(impl, run):
    async def main():
        s = impl.sleep(0)
        with pytest.raises(TypeError, match="An asyncio.Future, a coroutine or an awaitable"):
            impl.gather(s, 5)
        s.close()  # rustasync leaves it untouched (stock wrapped it in a Task)

    run(main())


def test_future_api(impl, run):
    async def main():
        g = impl.gather(value(1))
        assert asyncio.isfuture(g)
        assert g.get_loop() is asyncio.get_running_loop()
        assert g._loop is asyncio.get_running_loop()
        seen = []
        g.add_done_callback(seen.append)
        g.add_done_callback(print)
        assert g.remove_done_callback(print) == 1
        with pytest.raises(asyncio.InvalidStateError):
            g.result()
        await g
        await asyncio.sleep(0)
        return seen == [g], g.exception(), g.result()

    assert run(main()) == (True, None, [1])


def test_failed_gather_dropped_unobserved_is_reported(impl, run, loop_kind):
    """A failed gather dropped without anyone retrieving its exception is
    reported to the loop's exception handler, by reference count or by the
    collector, as asyncio's Future does; retrieved ones are not
    (regression: rustasync dropped the exception silently)."""
    skip_on_rloop(loop_kind, RLOOP_HANDLER_SIGNATURE)

    async def boom(*args):
        raise KeyError(*args)

    async def main():
        loop = asyncio.get_running_loop()
        contexts = []
        loop.set_exception_handler(lambda _, ctx: contexts.append(ctx))

        async def settle():
            for _ in range(6):
                await asyncio.sleep(0)

        # Dropped once every child is done (a pending child of stock's keeps
        # the gather alive through its done-callback).
        dropped = impl.gather(boom("dropped"), impl.sleep(0))
        observed = impl.gather(boom("awaited"))
        retrieved = impl.gather(boom("retrieved"))
        await settle()
        assert dropped.done() and retrieved.done()
        with pytest.raises(KeyError):
            await observed
        retrieved.exception()
        del dropped, observed, retrieved
        # A failed gather in a reference cycle (through its exception).
        holder = []
        cyclic = impl.gather(boom("cyclic", holder))
        holder.append(cyclic)
        await settle()
        del cyclic, holder
        gc.collect()
        return [
            (ctx["message"], ctx["exception"].args[0], ctx["future"].done()) for ctx in contexts
        ]

    assert run(main()) == [
        ("_GatheringFuture exception was never retrieved", "dropped", True),
        ("_GatheringFuture exception was never retrieved", "cyclic", True),
    ]


GATHERS_AT_EXIT = """
import asyncio, sys
import rustasync

gather = {"asyncio": asyncio.gather, "rustasync": rustasync.gather}[sys.argv[1]]


async def main():
    loop = asyncio.get_running_loop()
    ok, bad = loop.create_future(), loop.create_future()
    ok.set_result(1)
    bad.set_exception(ValueError("kept"))
    done, failed = gather(ok), gather(bad)
    for _ in range(3):
        await asyncio.sleep(0)
    return done, failed


# A module global, and a failed gather in a cycle that only the collection
# at exit frees.
done, failed = asyncio.run(main())
cycle = [failed]
cycle.append(cycle)
del failed, cycle
print("end", flush=True)
"""


def test_gathers_alive_at_interpreter_exit(impl):
    """Gathers the interpreter frees while it shuts down are finalised as
    stock's: the failed one nobody looked at is reported to its loop's
    exception handler, nothing else is printed (regression: the finaliser
    could not attach to the interpreter during its shutdown, and printed a
    Rust panic for every gather)."""
    proc = start("-c", GATHERS_AT_EXIT, impl.name)
    stdout, stderr = proc.communicate(timeout=60)
    assert (proc.returncode, stdout) == (0, "end\n"), stderr
    assert "panicked" not in stderr
    lines = stderr.splitlines()
    assert lines[0] == "_GatheringFuture exception was never retrieved", stderr
    assert lines[-1] == "ValueError: kept", stderr


def test_nested_and_asyncio_interop(impl, run):
    async def main():
        inner = impl.gather(value(1), impl.sleep(0.001, 2))
        outer = asyncio.gather(inner, impl.gather(value(3)))
        r1 = await outer
        r2 = await asyncio.wait_for(impl.gather(value(4)), 1)
        r3 = await asyncio.shield(impl.gather(value(5)))
        done, _ = await asyncio.wait([impl.gather(value(7))])
        assert [f.result() for f in done] == [[7]]
        async with asyncio.TaskGroup() as tg:
            t = tg.create_task(asyncio.wait_for(impl.gather(impl.sleep(0.001, 6)), 1))
        return r1, r2, r3, t.result()

    assert run(main()) == ([[1, 2], [3]], [4], [5], [6])


def test_wait_for_timeout_cancels_children(impl, run):
    async def main():
        loop = asyncio.get_running_loop()
        child = loop.create_task(impl.sleep(10))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(impl.gather(child, impl.sleep(10)), 0.01)
        return child.cancelled()

    assert run(main())


def test_gather_of_sleeps_only(impl, run):
    async def main():
        return await impl.gather(*(impl.sleep(0.001 * (i % 3), i) for i in range(100)))

    assert run(main()) == list(range(100))


# About a millisecond each (virtual time): many, so that the narrow windows
# (a cancel in the one iteration a sleep(0) child is yielding) come up.
GATHER_EXAMPLES = 3000 if os.environ.get("HYPOTHESIS_PROFILE") == "thorough" else 300


@settings(max_examples=GATHER_EXAMPLES, deadline=None)
@given(
    spec=st.lists(
        st.tuples(
            st.sampled_from(["ok", "err", "cancel", "sleep", "sleep", "stubborn"]),
            st.integers(0, 3),
        ),
        min_size=1,
        max_size=6,
    ),
    return_exceptions=st.booleans(),
    cancel_outer_at=st.one_of(st.none(), st.integers(0, 6)),
    through_task=st.booleans(),
)
def test_outcomes_match_asyncio(spec, return_exceptions, cancel_outer_at, through_task):
    """Random children (values, failures, cancellations from outside, sleeps
    of zero and more, children that take iterations to give up when
    cancelled), the gather optionally cancelled at any loop iteration of its
    life (directly, or through the task awaiting it): on a virtual clock,
    the same outcome, in the same iteration, with the same errors reported
    to the loop, on both implementations."""

    def outcome(mod):
        async def child(kind, steps):
            for _ in range(steps):
                await asyncio.sleep(0)
            if kind == "err":
                raise ValueError(steps)
            return (kind, steps)

        async def main():
            loop = asyncio.get_running_loop()
            errors = []
            loop.set_exception_handler(lambda _, ctx: errors.append(repr(ctx.get("exception"))))
            args = []
            to_cancel = []
            for kind, steps in spec:
                if kind == "sleep":
                    args.append(mod.sleep(0.001 * steps, ("sleep", steps)))
                elif kind == "cancel":
                    t = loop.create_task(mod.sleep(10))
                    to_cancel.append((steps, t))
                    args.append(t)
                elif kind == "stubborn":
                    args.append(stubborn(("stubborn", steps), steps))
                else:
                    args.append(child(kind, steps))
            g = mod.gather(*args, return_exceptions=return_exceptions)

            async def waiter():
                return await g

            awaited = loop.create_task(waiter()) if through_task else g
            done_at = None
            for i in range(12):
                for steps, t in to_cancel:
                    if steps == i:
                        t.cancel(f"c{steps}")
                if cancel_outer_at == i:
                    awaited.cancel("outer")
                await asyncio.sleep(0)
                if done_at is None and g.done():
                    done_at = i
            # A gather that never ends is an outcome (stock's always do).
            await asyncio.wait([awaited], timeout=1)
            try:
                res = awaited.result() if awaited.done() else "never done"
            except BaseException as e:  # noqa: BLE001
                res = ("raised", type(e).__name__, e.args)
            else:
                res = [
                    (type(r).__name__, r.args) if isinstance(r, BaseException) else r for r in res
                ]
            await asyncio.sleep(0.01)
            # A copy: what is reported later depends on when the collector runs.
            return res, done_at, list(errors)

        loop = rustasync.VirtualTimeLoop()
        try:
            return loop.run_until_complete(main())
        finally:
            loop.close()

    assert outcome(rustasync) == outcome(asyncio)


# rustasync-specific behaviour (documented differences from stock asyncio).


def test_bad_argument_leaves_nothing_running():
    async def main():
        before = len(asyncio.all_tasks())
        with pytest.raises(TypeError):
            rustasync.gather(value(1), value(2), object())
        return len(asyncio.all_tasks()) - before

    # The coroutines were closed: no "never awaited" warning, no task.
    assert asyncio.run(main()) == 0


def test_rejected_call_leaves_sleeps_and_futures_as_they_were():
    """A call rejected for a non-awaitable argument, or a future of another
    loop, takes over none of its sleeps (regression: `gather(s, 42)` had
    consumed `s`, and awaiting it raised "cannot reuse already awaited
    coroutine"). Stock would have started a Task for each argument before
    the bad one."""
    other = asyncio.new_event_loop()

    async def main():
        loop = asyncio.get_running_loop()
        s1, s2 = rustasync.sleep(0, "s1"), rustasync.sleep(0.001, "s2")
        fut = loop.create_future()
        with pytest.raises(TypeError):
            rustasync.gather(s1, fut, s2, 42)
        with pytest.raises(ValueError, match="different loop"):
            rustasync.gather(s1, s2, other.create_future())
        loop.call_soon(fut.set_result, "f")
        return await s1, await s2, await fut, await rustasync.gather(s1, s2, return_exceptions=True)

    try:
        s1, s2, f, again = asyncio.run(main())
    finally:
        other.close()
    assert (s1, s2, f) == ("s1", "s2", "f")
    # Awaited once: now they are spent, as coroutines would be.
    assert [type(e).__name__ for e in again] == ["RuntimeError", "RuntimeError"]


def test_no_task_per_sleep_child():
    async def main():
        g = rustasync.gather(*(rustasync.sleep(0.01, i) for i in range(1000)))
        n = len(asyncio.all_tasks())
        return n, await g

    n, res = asyncio.run(main())
    assert n == 1 and res == list(range(1000))


def test_failed_gathers_leave_no_timer_entries_behind():
    """A gather that fails gives up on its pending sleep children (stock's
    keep running, unobserved); their heap entries count as cancelled and are
    compacted (regression: they stayed until their deadlines)."""

    async def fail():
        raise KeyError("k")

    async def main():
        loop = asyncio.get_running_loop()
        for _ in range(20):
            gathers = [
                rustasync.gather(rustasync.sleep(3600), rustasync.sleep(3600), fail())
                for _ in range(50)
            ]
            await rustasync.sleep(0.001)
            await asyncio.gather(*gathers, return_exceptions=True)
        return timer_entries(loop)

    assert asyncio.run(main()) < 100


def test_started_sleep_is_wrapped_not_adopted():
    async def main():
        s = rustasync.sleep(0)
        assert s.send(None) is None
        return await rustasync.gather(s)

    assert asyncio.run(main()) == [None]


def test_future_of_another_loop_leaves_nothing_running():
    other = asyncio.new_event_loop()
    try:
        foreign = other.create_future()

        async def main():
            before = len(asyncio.all_tasks())
            with pytest.raises(ValueError, match="different loop"):
                rustasync.gather(value(1), foreign)
            return len(asyncio.all_tasks()) - before

        assert asyncio.run(main()) == 0
    finally:
        other.close()


def test_remove_done_callback_with_reentrant_eq(impl, run):
    """A callback whose `__eq__` uses the gather itself (regression: the
    comparison ran under the gather's lock and deadlocked)."""

    async def main():
        g = impl.gather(impl.sleep(0.001, "x"))
        calls = []

        class Cb:
            def __call__(self, fut):
                calls.append(fut.result())

            def __eq__(self, other):
                assert not g.done() and not g.cancelled()
                return other is self

            __hash__ = object.__hash__

        cb = Cb()
        g.add_done_callback(cb)
        assert g.remove_done_callback(lambda f: None) == 0
        assert g.remove_done_callback(cb) == 1
        assert await g == ["x"]
        await impl.sleep(0)
        return calls

    assert run(main()) == []


@pytest.mark.parametrize("flag", [1, "yes", [0], 0, None, "", ()], ids=repr)
def test_return_exceptions_is_read_for_truth(impl, run, flag):
    """asyncio tests `if not return_exceptions:` (regression: rustasync only
    took a bool and raised TypeError for anything else)."""

    async def main():
        async def boom():
            raise KeyError("k")

        try:
            return [type(r).__name__ for r in await impl.gather(boom(), return_exceptions=flag)]
        except KeyError:
            return "raised"

    assert run(main()) == (["KeyError"] if flag else "raised")


def reentry_run(impl_name: str, loop_kind: str) -> dict[str, dict]:
    """Run tests/_gather_reentry.py in a subprocess; its scenarios by name."""
    proc = start(str(Path(__file__).parent / "_gather_reentry.py"), impl_name, loop_kind)
    try:
        stdout, stderr = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
        last = [json.loads(line) for line in stdout.splitlines()][-1]
        pytest.fail(f"{impl_name}: never returned from {last.get('start')!r}")
    assert proc.returncode == 0, stderr
    return {r["name"]: r for r in map(json.loads, stdout.splitlines()) if "name" in r}


def test_objects_that_use_the_gather_from_inside_its_methods(loop_kind):
    """A sleep child's value, a removed callback, a done-callback or a child's
    `cancel()` that uses the gather while the gather is dropping or calling
    it: the same outcomes as stock, and each use sees a consistent gather
    (regression: `cancel()` dropped the value under the gather's lock, and
    the value's `__del__` deadlocked the thread)."""
    stock = reentry_run("asyncio", loop_kind)
    rust = reentry_run("rustasync", loop_kind)
    assert rust.keys() == stock.keys()
    for name, got in rust.items():
        assert got["outcome"] == stock[name]["outcome"], name
        # Stock frees a cancelled sleep's value only with the loop, too
        # late to use the gather; where both used it, they saw the same.
        assert got["touches"], name
        if stock[name]["touches"]:
            assert got["touches"] == stock[name]["touches"], name
