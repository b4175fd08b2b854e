"""Behaviour of rustasync's queues, each test body proven against asyncio's.

Tests taking the `impl` fixture run once with asyncio's queues and once with
rustasync's, on the stock loop and on uvloop; both must pass. Tests named
`test_rust_*` cover what asyncio does not have.
"""

from __future__ import annotations

import asyncio
import gc
import heapq
import re
import sys
import types
import warnings

import pytest
from queue_impls import IMPLS, LOOPS, STOCK, run

import rustasync


@pytest.fixture(params=list(IMPLS))
def impl(request) -> types.SimpleNamespace:
    return IMPLS[request.param]


@pytest.fixture(params=LOOPS)
def loop_kind(request) -> str:
    return request.param


@pytest.fixture
def arun(loop_kind):
    return lambda main: run(loop_kind, main)


def needs_shutdown(impl):
    if not impl.has_shutdown:
        pytest.skip("asyncio before 3.13 has no Queue.shutdown (backport not installed)")


def norm(text: str) -> str:
    return re.sub(r"0x[0-9a-f]+", "0x?", text)


# --- basics ---------------------------------------------------------------


@pytest.mark.parametrize(
    "cls, want",
    [("Queue", [3, 1, 2, 1]), ("LifoQueue", [1, 2, 1, 3]), ("PriorityQueue", [1, 1, 2, 3])],
)
def test_order(impl, arun, cls, want):
    async def main():
        q = getattr(impl, cls)()
        for x in (3, 1, 2):
            await q.put(x)
        q.put_nowait(1)
        assert q.qsize() == 4
        got = [await q.get(), q.get_nowait(), await q.get(), q.get_nowait()]
        assert got == want
        assert q.empty()

    arun(main)


def test_sizes_and_bounds(impl, arun):
    async def main():
        q = impl.Queue(2)
        assert (q.maxsize, q.qsize(), q.empty(), q.full()) == (2, 0, True, False)
        q.put_nowait(1)
        q.put_nowait(2)
        assert q.full()
        with pytest.raises(impl.QueueFull):
            q.put_nowait(3)
        for m in (0, -1):
            u = impl.Queue(m)
            for i in range(100):
                u.put_nowait(i)
            assert not u.full()
        f = impl.Queue(2.5)
        assert f.maxsize == 2.5
        f.put_nowait(1)
        f.put_nowait(2)
        assert not f.full()
        f.put_nowait(3)
        assert f.full()
        assert impl.Queue(True).maxsize is True
        with pytest.raises(AttributeError):
            q.maxsize = 3

    arun(main)


def test_exception_classes_are_asyncios():
    assert rustasync.QueueEmpty is asyncio.QueueEmpty
    assert rustasync.QueueFull is asyncio.QueueFull
    if hasattr(asyncio, "QueueShutDown"):
        assert rustasync.QueueShutDown is asyncio.QueueShutDown
    else:
        assert issubclass(rustasync.QueueShutDown, Exception)
        assert rustasync.QueueShutDown.__name__ == "QueueShutDown"


def test_get_nowait_empty(impl, arun):
    async def main():
        with pytest.raises(impl.QueueEmpty):
            impl.Queue().get_nowait()

    arun(main)


def test_repr(impl, arun):
    async def main():
        q = impl.Queue(5)
        assert norm(repr(q)) == "<Queue at 0x? maxsize=5>"
        assert str(q) == "<Queue maxsize=5>"
        q.put_nowait(1)
        q.put_nowait("a")
        assert norm(repr(q)) == "<Queue at 0x? maxsize=5 _queue=[1, 'a'] tasks=2>"
        q.get_nowait()
        q.get_nowait()
        t = asyncio.create_task(q.get())
        await asyncio.sleep(0)
        assert str(q) == "<Queue maxsize=5 _getters[1] tasks=2>"
        t.cancel()
        q.task_done()
        assert str(q) == "<Queue maxsize=5 _getters[1] tasks=1>"  # not removed yet
        await asyncio.sleep(0)
        assert str(q) == "<Queue maxsize=5 tasks=1>"
        f = impl.Queue(1)
        f.put_nowait(0)
        t = asyncio.create_task(f.put(1))
        await asyncio.sleep(0)
        assert str(f) == "<Queue maxsize=1 _queue=[0] _putters[1] tasks=1>"
        t.cancel()
        await asyncio.sleep(0)
        p = impl.PriorityQueue()
        for x in (3, 1, 2):
            p.put_nowait(x)
        assert str(p) == "<PriorityQueue maxsize=0 _queue=[1, 3, 2] tasks=3>"
        assert str(impl.LifoQueue(2.0)) == "<LifoQueue maxsize=2.0>"

    arun(main)


@pytest.mark.parametrize("mod", [asyncio, rustasync])
def test_generic_alias(mod):
    alias = mod.Queue[int]
    assert isinstance(alias, types.GenericAlias)
    assert alias.__origin__ is mod.Queue and alias.__args__ == (int,)
    assert mod.PriorityQueue[tuple[int, str]].__origin__ is mod.PriorityQueue


def test_subclasses(impl):
    mod = asyncio if impl is STOCK else rustasync  # the backport's classes are siblings
    assert issubclass(mod.LifoQueue, mod.Queue)
    assert issubclass(mod.PriorityQueue, mod.Queue)

    class Mine(impl.Queue):
        def extra(self):
            return self.qsize()

    m = Mine()
    m.put_nowait(1)
    assert m.extra() == 1
    assert str(m) == "<Mine maxsize=0 _queue=[1] tasks=1>"


# --- waiting, wake-up order, barging ---------------------------------------


def test_getters_served_fifo(impl, arun):
    async def main():
        q = impl.Queue()
        got = []

        async def getter(i):
            got.append((i, await q.get()))

        tasks = [asyncio.create_task(getter(i)) for i in range(4)]
        await asyncio.sleep(0)
        for x in "abcd":
            q.put_nowait(x)
        await asyncio.gather(*tasks)
        assert got == [(0, "a"), (1, "b"), (2, "c"), (3, "d")]

    arun(main)


def test_putters_served_fifo(impl, arun):
    async def main():
        q = impl.Queue(1)
        q.put_nowait("x")
        tasks = [asyncio.create_task(q.put(i)) for i in range(4)]
        await asyncio.sleep(0)
        got = []
        for _ in range(5):
            got.append(await q.get())
            await asyncio.sleep(0)
        await asyncio.gather(*tasks)
        assert got == ["x", 0, 1, 2, 3]

    arun(main)


def test_barging_woken_getter_rechecks(impl, arun):
    # asyncio wakes a getter but does not hand it the item: a get that runs
    # first takes it, and the woken getter waits again (at the back).
    async def main():
        q = impl.Queue()
        log = []

        async def getter(name):
            log.append((name, await q.get()))

        t1 = asyncio.create_task(getter("waiter"))
        await asyncio.sleep(0)
        q.put_nowait(1)
        assert q.qsize() == 1
        log.append(("barger", q.get_nowait()))
        await asyncio.sleep(0)
        assert not t1.done()
        assert str(q).startswith("<Queue maxsize=0 _getters[1]")
        q.put_nowait(2)
        await t1
        assert log == [("barger", 1), ("waiter", 2)]

    arun(main)


def test_cancelled_woken_getter_passes_wakeup(impl, arun):
    async def main():
        q = impl.Queue()
        g1 = asyncio.create_task(q.get())
        g2 = asyncio.create_task(q.get())
        await asyncio.sleep(0)
        q.put_nowait("item")  # wakes g1
        g1.cancel()  # ... which is cancelled before it runs
        with pytest.raises(asyncio.CancelledError):
            await g1
        assert await asyncio.wait_for(g2, 1) == "item"
        assert q.empty()

    arun(main)


def test_cancelled_waiting_getter_takes_nothing(impl, arun):
    async def main():
        q = impl.Queue()
        g1 = asyncio.create_task(q.get())
        await asyncio.sleep(0)
        g1.cancel()
        await asyncio.sleep(0)
        assert g1.cancelled()
        q.put_nowait(1)
        assert q.get_nowait() == 1
        assert str(q) == "<Queue maxsize=0 tasks=1>"

    arun(main)


def test_cancelled_put_leaves_no_item(impl, arun):
    async def main():
        q = impl.Queue(1)
        q.put_nowait(0)
        p1 = asyncio.create_task(q.put(1))
        p2 = asyncio.create_task(q.put(2))
        await asyncio.sleep(0)
        assert q.get_nowait() == 0  # wakes p1
        p1.cancel()
        await asyncio.gather(p1, p2, return_exceptions=True)
        assert p1.cancelled() and p2.done()
        assert q.get_nowait() == 2
        assert q.empty()

    arun(main)


def test_woken_putter_barged(impl, arun):
    async def main():
        q = impl.Queue(1)
        q.put_nowait(0)
        p = asyncio.create_task(q.put(1))
        await asyncio.sleep(0)
        q.get_nowait()  # wakes p
        q.put_nowait("barge")  # takes the slot first
        await asyncio.sleep(0)
        assert not p.done() and q.full()
        assert q.get_nowait() == "barge"
        await p
        assert q.get_nowait() == 1

    arun(main)


def test_get_never_suspends_when_item_ready(impl, arun):
    async def main():
        q = impl.Queue()
        q.put_nowait(1)
        order = []

        async def other():
            order.append("other")

        t = asyncio.create_task(other())
        order.append(await q.get())
        order.append("after")
        await t
        assert order == [1, "after", "other"]

    arun(main)


def test_item_taken_when_awaited_not_when_called(impl, arun):
    async def main():
        q = impl.Queue()
        q.put_nowait(1)
        c = q.get()
        assert q.qsize() == 1
        q.put_nowait(2)
        assert await c == 1
        p = q.put(3)
        assert q.qsize() == 1
        await p
        assert q.qsize() == 2

    arun(main)


# --- task_done / join --------------------------------------------------------


def test_task_done_and_join(impl, arun):
    async def main():
        q = impl.Queue()
        with pytest.raises(ValueError, match=r"^task_done\(\) called too many times$"):
            q.task_done()
        for i in range(3):
            q.put_nowait(i)
        joined = []

        async def joiner():
            await q.join()
            joined.append(q.qsize())

        js = [asyncio.create_task(joiner()) for _ in range(2)]
        await asyncio.sleep(0)
        for _ in range(3):
            q.get_nowait()
            await asyncio.sleep(0)
            assert not joined
            q.task_done()
        await asyncio.gather(*js)
        assert joined == [0, 0]
        await q.join()  # nothing unfinished: returns at once

    arun(main)


def test_join_cancelled(impl, arun):
    async def main():
        q = impl.Queue()
        q.put_nowait(1)
        j = asyncio.create_task(q.join())
        await asyncio.sleep(0)
        j.cancel()
        with pytest.raises(asyncio.CancelledError):
            await j
        q.get_nowait()
        q.task_done()
        await asyncio.wait_for(q.join(), 1)

    arun(main)


# --- shutdown -----------------------------------------------------------------


def test_shutdown_graceful(impl, arun):
    needs_shutdown(impl)

    async def main():
        q = impl.Queue()
        getters = [asyncio.create_task(q.get()) for _ in range(2)]
        await asyncio.sleep(0)
        q.put_nowait(1)
        q.put_nowait(2)
        q.put_nowait(3)
        q.shutdown()
        assert str(q) == "<Queue maxsize=0 _queue=[1, 2, 3] tasks=3 shutdown>"
        with pytest.raises(impl.QueueShutDown):
            q.put_nowait(4)
        with pytest.raises(impl.QueueShutDown):
            await q.put(4)
        assert sorted(await asyncio.gather(*getters)) == [1, 2]
        assert await q.get() == 3
        with pytest.raises(impl.QueueShutDown):
            await q.get()
        with pytest.raises(impl.QueueShutDown):
            q.get_nowait()
        assert q.qsize() == 0

    arun(main)


def test_shutdown_wakes_all_waiters(impl, arun):
    needs_shutdown(impl)

    async def main():
        q = impl.Queue(1)
        e = impl.Queue()
        q.put_nowait(0)
        putters = [asyncio.create_task(q.put(i)) for i in range(3)]
        getters = [asyncio.create_task(e.get()) for i in range(3)]
        await asyncio.sleep(0)
        q.shutdown()
        e.shutdown()
        res = await asyncio.gather(*putters, *getters, return_exceptions=True)
        assert all(isinstance(r, impl.QueueShutDown) for r in res)
        assert q.get_nowait() == 0

    arun(main)


def test_shutdown_immediate(impl, arun):
    needs_shutdown(impl)

    async def main():
        q = impl.Queue()
        for i in range(3):
            q.put_nowait(i)
        q.get_nowait()
        j = asyncio.create_task(q.join())
        await asyncio.sleep(0)
        q.shutdown(immediate=True)
        assert q.empty()
        assert str(q) == "<Queue maxsize=0 tasks=1 shutdown>"
        with pytest.raises(impl.QueueShutDown):
            await q.get()
        await asyncio.sleep(0)
        assert not j.done()
        q.task_done()
        await asyncio.wait_for(j, 1)
        with pytest.raises(ValueError):
            q.task_done()

    arun(main)


def test_shutdown_immediate_releases_join(impl, arun):
    needs_shutdown(impl)

    async def main():
        q = impl.PriorityQueue()
        for i in (2, 1):
            q.put_nowait(i)
        j = asyncio.create_task(q.join())
        await asyncio.sleep(0)
        q.shutdown(immediate=True)
        await asyncio.wait_for(j, 1)

    arun(main)


# --- loop binding ------------------------------------------------------------


def test_bound_to_one_loop(impl):
    q = impl.Queue()

    async def block_get():
        t = asyncio.create_task(q.get())
        await asyncio.sleep(0)
        t.cancel()

    run("asyncio", block_get)
    q.put_nowait(1)

    async def nowait_ok():
        assert q.get_nowait() == 1  # only waiting binds

    run("asyncio", nowait_ok)
    with pytest.raises(
        RuntimeError,
        match=r"^<Queue at 0x[0-9a-f]+ maxsize=0 tasks=1> is bound to a different event loop$",
    ):
        run("asyncio", lambda: q.get())


# --- coroutine-like ---------------------------------------------------------


def test_works_with_asyncio_helpers(impl, arun):
    async def main():
        q = impl.Queue()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(q.get(), 0.01)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.01):
                await q.get()
        q.put_nowait(1)
        q.put_nowait(2)
        assert await asyncio.gather(q.get(), q.get()) == [1, 2]
        async with asyncio.TaskGroup() as tg:
            t1 = tg.create_task(q.get())
            tg.create_task(q.put(3))
        assert t1.result() == 3
        assert await asyncio.wait_for(q.put(4), 1) is None
        assert await asyncio.create_task(q.get()) == 4
        assert str(q) == "<Queue maxsize=0 tasks=4>"

    arun(main)


def test_coroutine_protocol(impl, arun):
    async def main():
        q = impl.Queue()
        c = q.get()
        assert asyncio.iscoroutine(c)
        c.close()
        c.close()
        q.put_nowait(5)
        c = q.get()
        with pytest.raises(StopIteration) as ei:
            c.send(None)
        assert ei.value.value == 5
        with pytest.raises(RuntimeError, match="cannot reuse already awaited coroutine"):
            c.send(None)
        c = q.get()
        with pytest.raises(KeyError):
            c.throw(KeyError("k"))
        q.put_nowait((1, 2))
        assert await q.get() == (1, 2)  # tuples are not unpacked
        exc = ValueError("v")
        q.put_nowait(exc)
        assert await q.get() is exc  # neither are exception instances

    arun(main)


def test_manual_drive_and_close_removes_waiter(impl, arun):
    async def main():
        q = impl.Queue()
        c = q.get()
        fut = c.send(None)
        assert isinstance(fut, asyncio.Future) and fut._asyncio_future_blocking
        assert "_getters[1]" in str(q)
        c.close()
        assert fut.cancelled()
        assert str(q) == "<Queue maxsize=0>"
        c = q.get()
        c.send(None)
        del c
        gc.collect()
        assert str(q) == "<Queue maxsize=0>"

    arun(main)


def test_throw_after_wakeup_passes_it_on(impl, arun):
    async def main():
        q = impl.Queue()
        c1, c2 = q.get(), q.get()
        f1, f2 = c1.send(None), c2.send(None)
        q.put_nowait(1)
        assert f1.done() and not f2.done()
        with pytest.raises(KeyError):
            c1.throw(KeyError)
        assert f2.done()
        with pytest.raises(StopIteration) as ei:
            c2.send(None)
        assert ei.value.value == 1

    arun(main)


# --- PriorityQueue comparisons -------------------------------------------------


class Key:
    """Compares on `k` only, logging every comparison."""

    log: list = []

    def __init__(self, k, tag):
        self.k, self.tag = k, tag

    def __lt__(self, other):
        Key.log.append((self.tag, other.tag))
        return self.k < other.k

    def __repr__(self):
        return f"{self.k}{self.tag}"


def test_priority_same_comparisons_as_heapq(impl, arun):
    keys = [3, 1, 3, 2, 1, 2, 1, 3, 2, 1, 1]
    Key.log = []
    heap: list = []
    want = []
    for i, k in enumerate(keys):
        heapq.heappush(heap, Key(k, i))
        if i % 3 == 2:
            want.append(repr(heapq.heappop(heap)))
    while heap:
        want.append(repr(heapq.heappop(heap)))
    want_log = Key.log

    async def main():
        Key.log = []
        q = impl.PriorityQueue()
        out = []
        for i, k in enumerate(keys):
            await q.put(Key(k, i))
            if i % 3 == 2:
                out.append(repr(await q.get()))
        while not q.empty():
            out.append(repr(q.get_nowait()))
        assert out == want
        assert Key.log == want_log

    arun(main)


def test_priority_incomparable_put(impl, arun):
    async def main():
        q = impl.PriorityQueue()
        for x in (1, 2, 3):
            q.put_nowait(x)
        before = q.qsize()
        with pytest.raises(TypeError, match="'<' not supported"):
            q.put_nowait("a")
        with pytest.raises(TypeError):
            await q.put(None)
        # asyncio keeps the rejected item in its heap; rustasync does not.
        rejected = q.qsize() - before
        assert rejected == (2 if impl is STOCK else 0)
        assert str(q).endswith("tasks=3>")

    arun(main)


def test_rust_priority_incomparable_leaves_queue_unchanged(arun):
    async def main():
        q = rustasync.PriorityQueue()
        a, b = (1, "x"), (1, 2)  # compare fine with ints, not with each other
        q.put_nowait((0, 0))
        q.put_nowait(a)
        q.put_nowait((5, 5))
        before = str(q)
        with pytest.raises(TypeError):
            q.put_nowait(b)  # compared with a
        assert str(q) == before
        q2 = rustasync.PriorityQueue()
        for x in [(0, 0), (1, "x"), (2, 0)]:
            q2.put_nowait(x)
        q2.put_nowait((2, 5))
        # popping (0, 0) moves (2, 5) to the root, compared with (1, "x") fine,
        # then heap is [(1,'x'), (2,5), (2,0)]: popping again compares (2,0)<(2,5): fine.
        assert [q2.get_nowait() for _ in range(4)] == [(0, 0), (1, "x"), (2, 0), (2, 5)]
        q3 = rustasync.PriorityQueue()
        for x in [(1, "a"), (2, "b"), (2, 5)]:
            q3.put_nowait(x)
        snap = str(q3)
        with pytest.raises(TypeError):
            q3.get_nowait()  # sifting (2, 5) compares 5 < 'b'
        assert str(q3) == snap  # the item is not lost
        with pytest.raises(TypeError):
            await q3.get()
        assert str(q3) == snap

    arun(main)


def test_rust_priority_reentrant_comparison_raises():
    q = rustasync.PriorityQueue()

    class Nosy:
        def __lt__(self, other):
            q.qsize()
            return True

    q.put_nowait(Nosy())
    with pytest.raises(RuntimeError, match="busy"):
        q.put_nowait(Nosy())
    assert q.qsize() == 1


# --- rustasync additions ---------------------------------------------------------


def test_rust_bad_arguments():
    for bad in ("3", None, [1], object()):
        with pytest.raises(TypeError, match="maxsize"):
            rustasync.Queue(bad)
        with pytest.raises(TypeError, match="maxsize"):
            rustasync.PriorityQueue(bad)
    q = rustasync.Queue()
    with pytest.raises(TypeError):
        q.put_many(5)
    for n in (0, -1):
        with pytest.raises(ValueError, match="max_items"):
            q.get_many(n)
        with pytest.raises(ValueError, match="max_items"):
            q.get_nowait_many(n)
        with pytest.raises(ValueError, match="n must be"):
            q.task_done(n)
    assert rustasync.Queue(10**30).maxsize == 10**30
    assert not rustasync.Queue(float("nan")).full()


def test_rust_batch_operations(arun):
    async def main():
        q = rustasync.Queue()
        await q.put_many(range(10))
        assert await q.get_many(4) == [0, 1, 2, 3]
        assert q.get_nowait_many(3) == [4, 5, 6]
        assert q.get_nowait_many(100) == [7, 8, 9]
        with pytest.raises(rustasync.QueueEmpty):
            q.get_nowait_many(1)
        with pytest.raises(ValueError):
            q.task_done(11)
        q.task_done(10)
        await q.join()
        lq = rustasync.LifoQueue()
        await lq.put_many("abcde")
        assert await lq.get_many(3) == ["e", "d", "c"]
        pq = rustasync.PriorityQueue()
        await pq.put_many([5, 3, 4, 1, 2])
        assert pq.get_nowait_many(10) == [1, 2, 3, 4, 5]
        await q.put_many(iter([]))
        assert q.empty()

    arun(main)


def test_rust_get_many_waits_for_one(arun):
    async def main():
        q = rustasync.Queue()
        t = asyncio.create_task(q.get_many(5))
        await asyncio.sleep(0)
        assert not t.done()
        q.put_nowait(1)
        q.put_nowait(2)
        assert await t == [1, 2]

    arun(main)


def test_rust_put_many_waits_for_room_in_order(arun):
    async def main():
        q = rustasync.Queue(2)
        t = asyncio.create_task(q.put_many(range(5)))
        await asyncio.sleep(0)
        assert q.qsize() == 2 and not t.done()
        got = []
        while len(got) < 5:
            got.append(await q.get())
        await t
        assert got == [0, 1, 2, 3, 4]

    arun(main)


def test_rust_put_many_cancel_keeps_progress(arun):
    async def main():
        q = rustasync.Queue(3)
        t = asyncio.create_task(q.put_many(range(10)))
        await asyncio.sleep(0)
        assert q.qsize() == 3
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        assert q.get_nowait_many(10) == [0, 1, 2]
        assert str(q) == "<Queue maxsize=3 tasks=3>"

    arun(main)


def test_rust_put_many_shutdown_midway(arun):
    async def main():
        q = rustasync.Queue(2)
        t = asyncio.create_task(q.put_many(range(5)))
        await asyncio.sleep(0)
        q.shutdown()
        with pytest.raises(rustasync.QueueShutDown):
            await t
        assert q.get_nowait_many(10) == [0, 1]

    arun(main)


def test_rust_put_many_wakes_one_getter_per_item(arun):
    async def main():
        q = rustasync.Queue()
        getters = [asyncio.create_task(q.get()) for _ in range(3)]
        await asyncio.sleep(0)
        await q.put_many("ab")
        await asyncio.sleep(0)
        assert [g.done() for g in getters] == [True, True, False]
        q.put_nowait("c")
        assert [await g for g in getters] == ["a", "b", "c"]

    arun(main)


def test_rust_async_for(arun):
    async def main():
        q = rustasync.Queue()
        seen = []

        async def consumer():
            async for item in q:
                seen.append(item)
                q.task_done()

        c = asyncio.create_task(consumer())
        for i in range(5):
            await q.put(i)
            await asyncio.sleep(0)
        await q.join()
        q.put_nowait(5)
        q.shutdown()
        await asyncio.wait_for(c, 1)
        assert seen == [0, 1, 2, 3, 4, 5]

    arun(main)


@pytest.mark.parametrize("mod", [asyncio, rustasync])
def test_unawaited_ops_warn_like_coroutines(mod):
    """asyncio's methods are coroutines: dropped un-awaited they warn
    `coroutine 'Queue.get' was never awaited`; closed, they warn nothing."""
    q = mod.Queue()
    for make, name in ((q.get, "get"), (lambda: q.put(1), "put"), (q.join, "join")):
        with pytest.warns(RuntimeWarning, match=f"coroutine 'Queue.{name}' was never awaited"):
            make()
            gc.collect()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        q.get().close()
        q.put(1).close()
        gc.collect()
    assert q.qsize() == 0


def test_rust_op_names():
    q = rustasync.Queue()
    c = q.get_many(2)
    assert c.__qualname__ == "Queue.get_many" and c.__name__ == "get_many"
    assert "Queue.get_many()" in repr(c)
    c.close()


def test_rust_docstrings():
    for name in [
        "put",
        "put_nowait",
        "put_many",
        "get",
        "get_nowait",
        "get_many",
        "get_nowait_many",
        "task_done",
        "join",
        "shutdown",
        "qsize",
        "empty",
        "full",
    ]:
        doc = getattr(rustasync.Queue, name).__doc__
        assert doc and "Raises:" in doc, name
        assert "Like `asyncio.Queue." in doc or "Not in asyncio" in doc, name
        if name in ("put", "put_many", "get", "get_many", "join", "put_nowait"):
            assert "Cancel safety:" in doc, name


def test_rust_no_reference_leaks(arun):
    async def main():
        q = rustasync.Queue(1)
        item = object()
        before = sys.getrefcount(item)
        for _ in range(1000):
            await q.put(item)
            await q.get()
            q.put_nowait(item)
            q.get_nowait()
        q.put_nowait(item)
        p = asyncio.create_task(q.put(item))
        await asyncio.sleep(0)
        await q.get()
        await p
        await q.get()
        await q.put_many([item])
        await q.get_many(5)
        await asyncio.sleep(0)
        assert sys.getrefcount(item) == before

    arun(main)


def test_rust_gc_collects_cycles():
    import weakref

    class Item:
        pass

    async def main():
        q = rustasync.Queue()
        it = Item()
        q.put_nowait(it)
        t = asyncio.create_task(rustasync.Queue().get())
        await asyncio.sleep(0)
        t.cancel()
        await asyncio.sleep(0)
        return weakref.ref(it), q

    ref, q = run("asyncio", main)
    q.put_nowait(q)  # the queue holds itself
    del q
    gc.collect()
    assert ref() is None


def test_rust_second_thread_gets_runtime_error_not_deadlock():
    import threading

    q = rustasync.PriorityQueue()
    inside, release = threading.Event(), threading.Event()
    seen = []

    class Slow:
        def __lt__(self, other):
            inside.set()  # the queue is locked while this comparison runs
            release.wait(5)  # drops the GIL so the other thread can run
            return False

    def other():
        inside.wait(5)
        try:
            q.qsize()
        except RuntimeError as e:
            seen.append(str(e))
        release.set()

    t = threading.Thread(target=other)
    t.start()
    q.put_nowait(Slow())
    q.put_nowait(Slow())
    t.join(5)
    assert seen and "busy" in seen[0]
    assert q.qsize() == 2


def test_item_freed_when_consumer_drops_it(impl, arun):
    # On 3.12+ a value reaches `await` inside a StopIteration that rustasync
    # recycles; the item must still go as soon as the consumer drops it.
    import weakref

    class Item:
        pass

    async def main():
        q = impl.Queue()
        for waiting in (False, True):
            item = Item()
            ref = weakref.ref(item)
            if waiting:
                asyncio.get_running_loop().call_soon(q.put_nowait, item)
            else:
                q.put_nowait(item)
            del item
            got = await q.get()
            assert ref() is got
            del got
            assert ref() is None
            await q.put(Item())
            await q.get()
            assert q.empty()

    arun(main)


def test_yield_from_the_await_iterator(impl, arun):
    """Generator-based coroutines delegate with `yield from x.__await__()`:
    the iterator must itself be iterable, as asyncio's future iterator is."""

    @types.coroutine
    def legacy(q):
        got = yield from q.get().__await__()
        yield from q.put(got * 2).__await__()
        return got

    async def main():
        q = impl.Queue()
        waiter = asyncio.ensure_future(legacy(q))
        await asyncio.sleep(0)
        await q.put(21)
        assert await waiter == 21
        assert q.get_nowait() == 42

    arun(main)
