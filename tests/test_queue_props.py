"""Random programs run on asyncio's queues and on rustasync's must agree.

A program is a list of steps run by one driver coroutine: non-blocking calls
(`put_nowait`, `get_nowait`, `task_done`, `shutdown`, ...), spawning tasks
that block (`put`, `get`, `join`, and rustasync's `put_many`/`get_many`),
cancelling one of them, and yielding to the loop. Everything observable is
logged: return values, exception types, `qsize()`, `str(queue)` (which shows
the waiter counts) and the order in which tasks finish. The two logs must be
identical.

rustasync's additions run against the asyncio code they are documented to
behave like (a loop of `put`s; one `get` then `get_nowait`s). Priority
items compare on a key only (ties keep their identity) and some keys are
strings, so some comparisons raise; the asyncio side then restores its heap,
which is the documented rustasync behaviour (asyncio itself would keep a
half-sifted heap).
"""

from __future__ import annotations

import asyncio
import heapq

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from queue_impls import LOOPS, RUST, STOCK, run

if not STOCK.has_shutdown:
    pytest.skip("needs asyncio 3.13 queues or backports.asyncio.queues", allow_module_level=True)


class Key:
    """A priority item: compares on `k` only and logs each comparison."""

    __slots__ = ("k", "tag", "log")

    def __init__(self, k, tag, log):
        self.k, self.tag, self.log = k, tag, log

    def __lt__(self, other):
        self.log.append((self.tag, other.tag))
        return self.k < other.k

    def __repr__(self):
        return f"K({self.k!r}#{self.tag})"


class _RestoringHeap:
    """asyncio's PriorityQueue, but a failed comparison restores the heap."""

    _draining = False

    def _put(self, item):
        snap = list(self._queue)
        try:
            heapq.heappush(self._queue, item)
        except BaseException:
            self._queue[:] = snap
            raise

    def _get(self):
        if self._draining:
            return self._queue.pop()
        snap = list(self._queue)
        try:
            return heapq.heappop(self._queue)
        except BaseException:
            self._queue[:] = snap
            raise

    def shutdown(self, immediate=False):
        # Dropping items needs no comparisons (rustasync drops without them).
        self._draining = True
        try:
            super().shutdown(immediate)
        finally:
            self._draining = False


class RefPriorityQueue(_RestoringHeap, STOCK.PriorityQueue):
    pass


RefPriorityQueue.__name__ = "PriorityQueue"  # as repr() shows it


def exc_name(e: BaseException, impl) -> str:
    if impl.QueueShutDown is not None and isinstance(e, impl.QueueShutDown):
        return "QueueShutDown"
    return type(e).__name__


# Reference behaviour of rustasync's additions, written with asyncio's API.
async def ref_put_many(q, items):
    for x in items:
        await q.put(x)


async def ref_get_many(q, n):
    out = [await q.get()]
    while len(out) < n and not q.empty():
        try:
            out.append(q.get_nowait())
        except TypeError:
            break
    return out


async def ref_iterate(q):
    out = []
    while True:
        try:
            out.append(await q.get())
        except STOCK.QueueShutDown:
            return out


async def rust_iterate(q):
    return [x async for x in q]


ITEM = st.integers(0, 4)
# Repetition weights the common steps: most bugs need several waiters, a
# wake-up, and a cancellation landing between the wake-up and the task's turn.
STEP = st.one_of(
    *[st.tuples(st.just("put_nowait"), ITEM)] * 3,
    *[st.tuples(st.just("get"))] * 3,
    *[st.tuples(st.just("tick"))] * 3,
    *[st.tuples(st.just("cancel"), st.integers(0, 7))] * 2,
    *[st.tuples(st.just("put"), ITEM)] * 2,
    *[st.tuples(st.just("get_nowait"))] * 2,
    st.tuples(st.just("join")),
    st.tuples(st.just("task_done")),
    st.tuples(st.just("shutdown"), st.booleans()),
    st.tuples(st.just("put_many"), st.lists(ITEM, max_size=4)),
    st.tuples(st.just("get_many"), st.integers(1, 3)),
    st.tuples(st.just("get_nowait_many"), st.integers(1, 3)),
    st.tuples(st.just("iterate")),
)
PROGRAM = st.lists(STEP, max_size=30)
KEYS = st.lists(st.one_of(st.integers(0, 3), st.integers(0, 3), st.sampled_from("ab")), min_size=5)


def make_queue(impl, kind, maxsize):
    if kind == "priority":
        return (RefPriorityQueue if impl is STOCK else RUST.PriorityQueue)(maxsize)
    if kind == "lifo":
        return impl.LifoQueue(maxsize)
    return impl.Queue(maxsize)


def run_program(impl, kind, maxsize, program, keys, loop_kind="asyncio"):
    log: list = []
    cmp_log: list = []
    counter = iter(range(10_000))

    def item(x):
        if kind != "priority":
            return x
        n = next(counter)
        return Key(keys[n % len(keys)], n, cmp_log)

    def outcome(fn):
        try:
            return ("ok", repr(fn()))
        except Exception as e:
            return ("raise", exc_name(e, impl))

    async def main():
        q = make_queue(impl, kind, maxsize)
        tasks = []

        def spawn(label, coro):
            t = asyncio.create_task(coro)
            n = len(tasks)
            tasks.append(t)

            def done(t):
                if t.cancelled():
                    res = "cancelled"
                elif t.exception() is not None:
                    res = exc_name(t.exception(), impl)
                else:
                    res = repr(t.result())
                log.append(("done", n, label, res))

            t.add_done_callback(done)

        for i, (op, *args) in enumerate(program):
            if op == "put_nowait":
                log.append((i, op, outcome(lambda a=args: q.put_nowait(item(a[0])))))
            elif op == "get_nowait":
                log.append((i, op, outcome(q.get_nowait)))
            elif op == "get_nowait_many":
                if impl is RUST:
                    res = outcome(lambda a=args: q.get_nowait_many(a[0]))
                else:

                    def many(n=args[0]):
                        out = [q.get_nowait()]
                        while len(out) < n and not q.empty():
                            try:
                                out.append(q.get_nowait())
                            except TypeError:
                                break
                        return out

                    res = outcome(many)
                log.append((i, op, res))
            elif op == "task_done":
                log.append((i, op, outcome(q.task_done)))
            elif op == "shutdown":
                log.append((i, op, outcome(lambda a=args: q.shutdown(a[0]))))
            elif op == "put":
                spawn(op, q.put(item(args[0])))
            elif op == "get":
                spawn(op, q.get())
            elif op == "join":
                spawn(op, q.join())
            elif op == "put_many":
                items = [item(x) for x in args[0]]
                spawn(op, q.put_many(items) if impl is RUST else ref_put_many(q, items))
            elif op == "get_many":
                spawn(op, q.get_many(args[0]) if impl is RUST else ref_get_many(q, args[0]))
            elif op == "iterate":
                spawn(op, rust_iterate(q) if impl is RUST else ref_iterate(q))
            elif op == "cancel":
                if tasks:
                    log.append((i, op, tasks[args[0] % len(tasks)].cancel()))
            elif op == "tick":
                await asyncio.sleep(0)
            log.append((i, "state", q.qsize(), q.empty(), q.full(), str(q)))
        for _ in range(3):
            await asyncio.sleep(0)
        log.append(("end", str(q)))
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        log.append(("final", str(q)))

    run(loop_kind, main)
    return log, cmp_log


def check(kind, maxsize, program, keys, loop_kind="asyncio"):
    want = run_program(STOCK, kind, maxsize, program, keys, loop_kind)
    got = run_program(RUST, kind, maxsize, program, keys, loop_kind)
    assert got[0] == want[0]
    assert got[1] == want[1]


FAST = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


# A woken getter cancelled before it runs must pass its wake-up on.
WOKEN_THEN_CANCELLED = [("get",), ("get",), ("tick",), ("put_nowait", 1), ("cancel", 0), ("tick",)]


@FAST
@given(maxsize=st.integers(0, 3), program=PROGRAM)
@example(maxsize=0, program=WOKEN_THEN_CANCELLED)
@example(
    maxsize=1,
    program=[("put_nowait", 0), ("put", 1), ("put", 2), ("tick",), ("get_nowait",), ("cancel", 0)],
)
def test_fifo_matches_asyncio(maxsize, program):
    check("fifo", maxsize, program, [0])


@FAST
@given(maxsize=st.integers(0, 3), program=PROGRAM)
def test_lifo_matches_asyncio(maxsize, program):
    check("lifo", maxsize, program, [0])


@FAST
@given(maxsize=st.integers(0, 3), program=PROGRAM, keys=st.lists(st.integers(0, 2), min_size=5))
def test_priority_with_ties_matches_heapq(maxsize, program, keys):
    check("priority", maxsize, program, keys)


@FAST
@given(maxsize=st.integers(0, 3), program=PROGRAM, keys=KEYS)
def test_priority_incomparable_matches_restoring_heapq(maxsize, program, keys):
    check("priority", maxsize, program, keys)


@pytest.mark.skipif("uvloop" not in LOOPS, reason="uvloop not installed")
@settings(max_examples=40, deadline=None)
@given(maxsize=st.integers(0, 2), program=PROGRAM, kind=st.sampled_from(["fifo", "lifo"]))
def test_matches_asyncio_under_uvloop(maxsize, program, kind):
    check(kind, maxsize, program, [0], loop_kind="uvloop")
