"""rustasync.sleep against asyncio.sleep: one body, both implementations."""

from __future__ import annotations

import asyncio
import decimal
import fractions
import gc
import math
import sys
import warnings

import pytest
from _loops import RLOOP_INFINITE_TIMER, skip_on_rloop
from hypothesis import given, settings
from hypothesis import strategies as st

import rustasync


def test_returns_result(impl, run):
    async def main():
        return [await impl.sleep(0.001, "x"), await impl.sleep(0, (1, 2)), await impl.sleep(-1)]

    assert run(main()) == ["x", (1, 2), None]


@pytest.mark.parametrize(
    "value", [StopIteration(3), ValueError("v"), (), (None,), [1], {"a": 1}], ids=repr
)
def test_returns_awkward_values(impl, run, value):
    async def main():
        return await impl.sleep(0, value), await impl.sleep(0.001, value)

    a, b = run(main())
    assert a is value and b is value


def test_zero_yields_exactly_once(impl, run):
    log: list[object] = []

    async def other():
        for i in range(4):
            log.append(i)
            await asyncio.sleep(0)

    async def main():
        t = asyncio.get_running_loop().create_task(other())
        await asyncio.sleep(0)  # let `other` start
        log.append("before")
        await impl.sleep(0)
        log.append("after")
        await t

    run(main())
    assert log == [0, "before", 1, "after", 2, 3]


def test_waits_at_least_delay_on_loop_clock(impl, run):
    async def main():
        loop = asyncio.get_running_loop()
        start = loop.time()
        await impl.sleep(0.03)
        return loop.time() - start

    # uvloop's clock has millisecond resolution.
    assert run(main()) >= 0.03 - 0.0011


# The deadlines are 10 ms apart: the expected order assumes every task
# starts before the earliest deadline, which a loaded machine can break
# at millisecond spacing (for asyncio's sleep as for ours).
@settings(max_examples=15, deadline=None)
@given(delays=st.lists(st.sampled_from([0, 0.01, 0.02, 0.04]), min_size=1, max_size=40))
def test_wakeup_order_deadline_then_fifo(delays):
    for impl_sleep in (asyncio.sleep, rustasync.sleep):
        order: list[int] = []

        async def one(i, d, sleep=impl_sleep, order=order):
            await sleep(d)
            order.append(i)

        async def main(sleep=impl_sleep):
            await asyncio.gather(*(one(i, d) for i, d in enumerate(delays)))

        asyncio.run(main())
        # Zero delays resume in the next iteration in start order; positive
        # delays by deadline, and FIFO among equal deadlines.
        expected = sorted(range(len(delays)), key=lambda i: (delays[i] > 0, delays[i], i))
        assert order == expected, (impl_sleep, delays)


def test_many_equal_and_different_deadlines(impl, run):
    order: list[tuple[float, int]] = []

    async def one(i, d):
        await impl.sleep(d)
        order.append((d, i))

    async def main():
        # Deadlines far enough apart that start times cannot reorder them.
        delays = [0.01 * (i % 5) for i in range(200)]
        await asyncio.gather(*(one(i, d) for i, d in enumerate(delays)))

    run(main())
    assert order == sorted(order)


def test_create_task_and_iscoroutine(impl, run):
    async def main():
        coro = impl.sleep(0.001, 7)
        assert asyncio.iscoroutine(coro)
        return await asyncio.get_running_loop().create_task(coro)

    assert run(main()) == 7


def test_cancel_before_first_await(impl, run):
    async def main():
        t = asyncio.get_running_loop().create_task(impl.sleep(10))
        t.cancel("early")
        with pytest.raises(asyncio.CancelledError) as ei:
            await t
        return ei.value.args

    assert run(main()) == ("early",)


@pytest.mark.parametrize("delay", [0, 0.5, math.inf])
def test_cancel_while_sleeping_carries_message(impl, run, delay):
    async def main():
        t = asyncio.get_running_loop().create_task(impl.sleep(delay))
        await asyncio.sleep(0)
        assert t.cancel("msg")
        with pytest.raises(asyncio.CancelledError) as ei:
            await t
        return ei.value.args, t.cancelled()

    args, cancelled = run(main())
    assert cancelled
    # A zero sleep was already past its only yield point when cancelled.
    assert args == ("msg",)


def test_cancel_after_wake_before_resume(impl, run):
    async def main():
        t = asyncio.get_running_loop().create_task(impl.sleep(0.01, "r"))
        await impl.sleep(0.01)
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        return t.cancelled()

    assert run(main())


def test_cancel_after_done_is_refused(impl, run):
    async def main():
        t = asyncio.get_running_loop().create_task(impl.sleep(0.001, "r"))
        assert await t == "r"
        return t.cancel()

    assert run(main()) is False


def test_cancelled_sleep_then_others_still_fire(impl, run):
    async def main():
        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(impl.sleep(100)) for _ in range(300)]
        await asyncio.sleep(0)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return await impl.sleep(0.001, "still works")

    assert run(main()) == "still works"


def test_timeout_context(impl, run):
    async def main():
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.01):
                await impl.sleep(10)
        async with asyncio.timeout(1):
            return await impl.sleep(0.001, "in time")

    assert run(main()) == "in time"


def test_wait_for(impl, run):
    async def main():
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(impl.sleep(10), 0.01)
        return await asyncio.wait_for(impl.sleep(0.001, 5), 1)

    assert run(main()) == 5


def test_taskgroup_and_asyncio_gather(impl, run):
    async def main():
        async with asyncio.TaskGroup() as tg:
            a = tg.create_task(impl.sleep(0.001, "a"))
            b = tg.create_task(impl.sleep(0, "b"))
        return a.result(), b.result(), await asyncio.gather(impl.sleep(0.001, 1), impl.sleep(0, 2))

    assert run(main()) == ("a", "b", [1, 2])


def test_inf_sleeps_until_cancelled(impl, run, loop_kind):
    skip_on_rloop(loop_kind, RLOOP_INFINITE_TIMER)

    async def main():
        t = asyncio.get_running_loop().create_task(impl.sleep(math.inf))
        await asyncio.sleep(0.01)
        assert not t.done()
        t.cancel()
        await asyncio.gather(t, return_exceptions=True)
        return t.cancelled()

    assert run(main())


@pytest.mark.parametrize("bad", ["1", None, object(), [1], b"1"], ids=repr)
def test_bad_delay_type(impl, run, bad):
    async def main():
        with pytest.raises(TypeError):
            await impl.sleep(bad)

    run(main())


def test_no_running_loop(impl):
    coro = impl.sleep(1)
    with pytest.raises(RuntimeError, match="no running event loop"):
        coro.send(None)
    coro.close()


def test_send_throw_close_like_a_coroutine(impl, run):
    async def main():
        c = impl.sleep(0)
        assert c.send(None) is None  # the bare yield
        with pytest.raises(StopIteration):
            c.send(None)
        c = impl.sleep(10)
        c.send(None)
        with pytest.raises(KeyError):
            c.throw(KeyError("k"))
        c = impl.sleep(10)
        c.send(None)
        c.close()

    run(main())


# rustasync-specific behaviour (documented differences from stock asyncio).


def test_nan_is_rejected_naming_delay():
    with pytest.raises(ValueError, match="delay"):
        rustasync.sleep(float("nan"))


def test_bad_type_message_names_delay():
    with pytest.raises(TypeError, match="delay"):
        rustasync.sleep("1")


def test_unawaited_sleep_warns_like_a_coroutine(impl):
    """Dropped without being awaited: `RuntimeWarning: coroutine 'sleep' was
    never awaited`, through the warning filters; closed, or finished by an
    exception, it warns nothing."""
    with pytest.warns(RuntimeWarning, match="coroutine 'sleep' was never awaited"):
        s = impl.sleep(1)
        del s
        gc.collect()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        impl.sleep(1).close()
        s = impl.sleep(1)
        with pytest.raises(RuntimeError, match="no running event loop"):
            s.send(None)
        del s
        gc.collect()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        impl.sleep(1)
        gc.collect()


def test_huge_ints_and_floats(impl, run, loop_kind):
    """A positive int too large for a float cannot become a deadline
    (the stock loop's `loop.time() + delay` overflows; uvloop clamps it to
    ~100 years, where rustasync raises as the stock loop does); a huge
    negative one is just "no delay"; `inf` sleeps until cancelled."""

    async def main():
        if impl.name == "rustasync" or loop_kind == "asyncio":
            with pytest.raises(OverflowError):
                await impl.sleep(10**400)
        t = asyncio.get_running_loop().create_task(impl.sleep(float("inf")))
        await asyncio.sleep(0)
        t.cancel()
        await asyncio.gather(t, return_exceptions=True)
        assert t.cancelled()
        return await impl.sleep(-(10**400), "neg")

    assert run(main()) == "neg"


def test_loop_closed_with_pending_sleeps(loop_factory):
    loop = loop_factory()
    try:
        fut = loop.create_task(rustasync.sleep(100))
        loop.run_until_complete(asyncio.sleep(0.001))
        fut.cancel()
        loop.run_until_complete(asyncio.gather(fut, return_exceptions=True))
        loop.create_task(rustasync.sleep(100))._log_destroy_pending = False
        loop.run_until_complete(asyncio.sleep(0))
    finally:
        loop.close()
    # A later loop in the same thread starts clean.
    assert asyncio.run(rustasync.sleep(0.001, "fresh")) == "fresh"


def test_sequential_loops_in_one_thread():
    for i in range(5):
        assert asyncio.run(rustasync.sleep(0.001, i)) == i


def test_sleep_under_tracing():
    seen = []

    def tracer(frame, event, arg):
        seen.append(event)
        return None

    async def main():
        return await rustasync.sleep(0, 1), await rustasync.sleep(0.001, (2,))

    sys.settrace(tracer)
    try:
        assert asyncio.run(main()) == (1, (2,))
    finally:
        sys.settrace(None)
    assert seen


@pytest.mark.parametrize(
    "delay, ok",
    [(fractions.Fraction(1, 1000), True), (decimal.Decimal("0.001"), False)],
    ids=repr,
)
def test_delay_accepted_as_loop_time_plus_delay(delay, ok):
    """On the stock loop asyncio computes `loop.time() + delay`: a Fraction
    works, a Decimal is a TypeError (regression: rustasync took anything with
    `__float__`). rustasync checks when called and names `delay`."""

    async def main(sleep):
        try:
            await sleep(delay)
        except TypeError as e:
            return "TypeError", "delay" in str(e) or sleep is asyncio.sleep
        return "ok", True

    want = ("ok", True) if ok else ("TypeError", True)
    assert asyncio.run(main(asyncio.sleep)) == want
    assert asyncio.run(main(rustasync.sleep)) == want
