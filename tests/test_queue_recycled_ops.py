"""Queue operations are recycled once freed: what must not change.

A finished `q.get()`/`q.put(x)` object that nobody references is kept
(emptied) for the next operation. Each test body runs against asyncio's
coroutines as well, on the stock loop and on uvloop: an operation still
referenced is never handed out again and keeps behaving as a finished
coroutine, a reused one is a fresh object to the collector, and the queue
is released when its last operation goes.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import types
import weakref

import pytest
from queue_impls import IMPLS, LOOPS, run


@pytest.fixture(params=list(IMPLS))
def impl(request) -> types.SimpleNamespace:
    return IMPLS[request.param]


@pytest.fixture(params=LOOPS)
def arun(request):
    return lambda main: run(request.param, main)


def test_held_operation_is_never_reused(impl, arun):
    async def main():
        q = impl.Queue()
        q.put_nowait(1)
        q.put_nowait(2)
        held = q.get()
        assert await held == 1
        ops = []
        for i in range(200):
            op = q.put(i)
            assert op is not held
            await op
            ops.append(op)
            assert await q.get() == (2 if i == 0 else i - 1)
        fresh = q.get()
        assert fresh is not held and all(fresh is not o for o in ops)
        # The held, finished one still behaves as a finished coroutine.
        with pytest.raises(RuntimeError, match="cannot reuse already awaited coroutine"):
            await held
        with pytest.raises(RuntimeError, match="cannot reuse already awaited coroutine"):
            held.send(None)
        held.close()
        assert await fresh is not None

    arun(main)


def test_freed_operations_do_not_leak_state_into_new_ones(impl, arun):
    async def main():
        q = impl.Queue(1)
        for i in range(300):
            await q.put(i)
            assert await q.get() == i
        # A put that waits, then a get that frees it; a get that waits.
        await q.put("a")
        blocked = asyncio.ensure_future(q.put("b"))
        await asyncio.sleep(0)
        assert not blocked.done()
        assert await q.get() == "a"
        await blocked
        assert await q.get() == "b"
        waiter = asyncio.ensure_future(q.get())
        await asyncio.sleep(0)
        await q.put("c")
        assert await waiter == "c"
        assert q.empty()

    arun(main)


def test_reused_operation_is_a_tracked_new_object(impl, arun):
    async def main():
        q = impl.Queue()
        for i in range(50):
            await q.put(i)
            await q.get()
        op = q.get()
        assert gc.is_tracked(op)
        assert any(r is q for r in gc.get_referents(op)) or impl.name == "asyncio"
        q.put_nowait(7)
        assert await op == 7

    arun(main)


def test_never_awaited_after_reuse_still_warns(impl, arun):
    async def main():
        q = impl.Queue()
        for i in range(20):
            await q.put(i)
            await q.get()
        with pytest.warns(RuntimeWarning, match=r"coroutine '.*\bget' was never awaited"):
            op = q.get()
            del op
            gc.collect()

    arun(main)


def test_freed_operation_releases_queue_and_item(impl, arun):
    async def main():
        q = impl.Queue()
        item = object()
        base_q = sys.getrefcount(q)
        base_item = sys.getrefcount(item)
        for _ in range(10):
            await q.put(item)
            got = await q.get()
            del got
        assert sys.getrefcount(item) == base_item
        assert sys.getrefcount(q) == base_q

    arun(main)


def test_queue_freed_with_its_last_operation(impl, arun):
    async def main():
        q = impl.Queue()
        q.put_nowait(1)
        op = q.get()
        assert await op == 1
        freed = []
        # Only the finished operation keeps the queue now (asyncio's
        # coroutine keeps its frame's `self` until it is freed too).
        try:
            weakref.finalize(q, freed.append, True)
        except TypeError:
            return  # not weak-referenceable: nothing to observe
        del q
        gc.collect()
        del op
        gc.collect()
        assert freed == [True]

    arun(main)


def test_operation_type_cannot_gain_a_finalizer(impl, arun):
    """A finalizer added to the operation type would see reused objects as
    already finalized; the type refuses new attributes, as a coroutine's
    type does."""

    async def main():
        q = impl.Queue()
        q.put_nowait(1)
        op = q.get()
        assert await op == 1
        before = getattr(type(op), "__del__", None)
        with pytest.raises(TypeError):
            type(op).__del__ = lambda self: None
        assert getattr(type(op), "__del__", None) is before

    arun(main)
