"""No leaks: memory per operation after warm-up, and reference cycles
through callbacks and items are collected.

The resident-memory runs happen in a fresh process (tests/_leak_probe.py),
one per loop kind, in parallel. A control kind that keeps ~100 bytes per
operation proves the measurement can fail.
"""

from __future__ import annotations

import asyncio
import gc
import json
import subprocess
import sys
import warnings
import weakref
from pathlib import Path

import pytest
from _loops import RLOOP_CLOSE_KEEPS_CALLBACKS, skip_on_rloop
from conftest import LOOP_KINDS

import rustasync

PROBE = Path(__file__).with_name("_leak_probe.py")
MB = 1 << 20
CONTROL = "control: 100 bytes kept per op"


def probe(scale: int, timeout: float) -> dict[str, dict[str, dict[str, float]]]:
    procs = {
        kind: subprocess.Popen(
            [sys.executable, str(PROBE), kind, str(scale)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for kind in LOOP_KINDS
    }
    results = {}
    for kind, p in procs.items():
        out, err = p.communicate(timeout=timeout)
        assert p.returncode == 0, err
        results[kind] = json.loads(out)
    return results


def check(results, allowance: int, per_op: float) -> None:
    table = []
    for loop_kind, kinds in results.items():
        for name, r in kinds.items():
            table.append(f"{loop_kind:9} {name:52} {r['ops']:>8} ops {r['bytes_per_op']:8.2f} B/op")
            if name == CONTROL:
                # ~100 bytes plus the bytes object header and a list slot.
                assert r["bytes_per_op"] > 80, r
                assert r["rss_growth"] > allowance + per_op * r["ops"], r
                continue
            assert r["rss_growth"] < allowance + per_op * r["ops"], (loop_kind, name, r)
            assert r["objects_growth"] < 100, (loop_kind, name, r)
    print("\n".join(table))


def test_memory_per_operation_is_flat() -> None:
    """100,000 operations of each kind (50,000 gathers of 10): growth under
    2 MiB of allocator noise plus 10 bytes per operation, so a leak of
    ~40 bytes per operation or more fails."""
    check(probe(100_000, timeout=150), allowance=2 * MB, per_op=10)


@pytest.mark.soak
@pytest.mark.timeout(0)
def test_memory_per_operation_soak() -> None:
    """1,000,000 operations of each kind: growth under 10 MB."""
    check(probe(1_000_000, timeout=3600), allowance=10 * MB, per_op=0)


# --------------------------------------------------------------- cycles


class Box:
    """A weak-referenceable holder for cycles."""


def collected(ref: weakref.ref) -> bool:
    for _ in range(3):
        gc.collect()
    return ref() is None


def fill_queue_op_freelist() -> None:
    """Create and free many QueueOps first: with a PyO3 `freelist` on QueueOp,
    every later one would be reused memory that PyO3 0.30 does not re-track
    for the collector, which these tests would catch."""
    ops = [rustasync.Queue().get() for _ in range(100)]
    for op in ops:
        op.close()
    del ops
    gc.collect()


def test_reused_queue_ops_take_part_in_gc() -> None:
    fill_queue_op_freelist()
    q = rustasync.Queue()
    ops = [q.get(), q.put(1), q.join(), q.put_many([1]), q.get_many(1)]
    assert all(gc.is_tracked(op) for op in ops)
    for op in ops:
        op.close()


def test_queue_item_referencing_its_queue_with_waiters(run) -> None:
    fill_queue_op_freelist()

    async def main():
        q = rustasync.PriorityQueue(1)
        box = Box()
        box.q = q
        q.put_nowait((1, box))
        putter = asyncio.ensure_future(q.put((0, box)))  # waits: full
        getter_q = rustasync.LifoQueue()
        getter_q.put_nowait(getter_q)
        getter = asyncio.ensure_future(getter_q.join())
        box.tasks = (putter, getter)
        await rustasync.sleep(0)
        putter.cancel()
        getter.cancel()
        await asyncio.gather(putter, getter, return_exceptions=True)
        return weakref.ref(box), weakref.ref(getter)

    box_ref, task_ref = run(main())
    assert collected(box_ref)
    assert collected(task_ref)


def test_pending_ops_referencing_their_queue(run) -> None:
    """A queue whose pending get/put operations (never awaited, or driven by
    hand and abandoned) are the only references to it."""
    fill_queue_op_freelist()

    async def main():
        q = rustasync.Queue(1)
        box = Box()
        q.put_nowait(box)
        # Never awaited on purpose (they warn so when collected).
        box.ops = [q.get(), q.put(box), q.join(), q.put_many([box]), q.get_many(2)]
        op = q.put(box)
        box.fut = op.send(None)  # parked on a waiter future
        box.op = op
        return weakref.ref(box)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        assert collected(run(main()))


def test_gather_child_result_referencing_the_gather(run) -> None:
    async def main():
        box = Box()

        async def child():
            await rustasync.sleep(0.001)
            return box

        g = rustasync.gather(child(), rustasync.sleep(0.001, box), rustasync.sleep(0, box))
        box.g = g
        g.add_done_callback(lambda f, box=box: None)
        res = await g
        assert res == [box, box, box]
        return weakref.ref(box)

    assert collected(run(main()))


def test_gather_exception_referencing_the_gather(run) -> None:
    async def main():
        box = Box()

        async def boom():
            err = KeyError(box)
            raise err

        g = rustasync.gather(boom(), rustasync.sleep(10, box))
        box.g = g
        try:
            await g
        except KeyError:
            pass
        return weakref.ref(box)

    # The sleep(10) child stays in the timer heap until the loop closes.
    assert collected(run(main()))


def test_sleep_result_referencing_the_task(run) -> None:
    async def main():
        box = Box()
        t = asyncio.ensure_future(rustasync.sleep(0.001, box))
        box.t = t
        pending = asyncio.ensure_future(rustasync.sleep(100, box))
        box.pending = pending
        assert await t is box
        pending.cancel()
        await asyncio.gather(pending, return_exceptions=True)
        return weakref.ref(box)

    assert collected(run(main()))


def test_pending_sleeps_of_a_closed_loop_are_released(loop_factory, loop_kind) -> None:
    """A loop closed with sleeps still in its timer heap: once the thread's
    next loop looks its timers up, the old heap (and what the sleeps would
    have returned) is released."""
    skip_on_rloop(loop_kind, RLOOP_CLOSE_KEEPS_CALLBACKS)
    loop = loop_factory()
    box = Box()
    for _ in range(3):
        loop.create_task(rustasync.sleep(100, box))._log_destroy_pending = False
    loop.run_until_complete(rustasync.sleep(0))
    box.loop = loop
    ref = weakref.ref(box)
    loop.close()
    del box, loop
    asyncio.run(rustasync.sleep(0.001))  # a new loop: the registry is pruned
    assert collected(ref)


def test_no_reference_count_drift(run) -> None:
    async def main():
        item, result = object(), object()
        before = sys.getrefcount(item), sys.getrefcount(result)
        for _ in range(200):
            await rustasync.sleep(0, result)
            await rustasync.sleep(1e-6, result)
            await rustasync.gather(rustasync.sleep(0, item), rustasync.sleep(1e-6, result))
            t = asyncio.ensure_future(rustasync.sleep(10, result))
            await rustasync.sleep(0)
            t.cancel()
            await asyncio.gather(t, return_exceptions=True)
            del t
            try:
                async with asyncio.timeout(0):
                    await rustasync.gather(rustasync.sleep(1, item), rustasync.sleep(0, result))
            except TimeoutError:
                pass
        await rustasync.sleep(0.001)
        await rustasync.sleep(0)
        gc.collect()
        return before, (sys.getrefcount(item), sys.getrefcount(result))

    before, after = run(main())
    assert after == before
