"""Ownership and lifecycle (docs/design.md): a waiting task is reachable
exactly as it would be on asyncio, per-loop state never keeps a loop alive,
no Python runs under a Rust lock, and a forked child works.

Each behaviour is checked on a stock asyncio equivalent too, so the test
shows what asyncio does.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import math
import subprocess
import sys
import threading
import time
import weakref
from typing import Any

import pytest
from _loops import RLOOP_CLOSE_KEEPS_CALLBACKS, RLOOP_INFINITE_TIMER, skip_on_rloop
from conftest import LOOP_KINDS, new_loop

import rustasync
from rustasync import _rustasync as _ra

# -- a task waiting on something fed from elsewhere survives gc.collect() --


class _StockQueue:
    """asyncio.Queue: its waiters are reachable through `_getters`."""

    def __init__(self) -> None:
        self.q: asyncio.Queue[object] = asyncio.Queue()
        self.recv = self.q.get
        self.send_nowait = self.q.put_nowait


class _Channel:
    def __init__(self) -> None:
        self.ch: rustasync.Channel[object] = rustasync.Channel()
        self.recv = self.ch.recv
        self.send_nowait = self.ch.send_nowait


class _RustQueue:
    def __init__(self) -> None:
        self.q: rustasync.Queue[object] = rustasync.Queue()
        self.recv = self.q.get
        self.send_nowait = self.q.put_nowait


@pytest.mark.parametrize("kind", [_StockQueue, _Channel, _RustQueue])
def test_unreferenced_waiting_task_survives_gc(kind, run) -> None:
    """`create_task(consumer())` not kept anywhere, parked on a receive: the
    collector must not destroy it while the producer still holds the
    channel."""

    async def main():
        box = kind()
        got: list[object] = []

        async def consumer():
            got.append(await box.recv())

        asyncio.get_running_loop().create_task(consumer())
        await asyncio.sleep(0.01)
        for _ in range(3):
            gc.collect()
        box.send_nowait("item")
        for _ in range(5):
            await asyncio.sleep(0.01)
        return got

    assert run(main()) == ["item"]


@pytest.mark.parametrize("backend", ["executor", "rust"])
def test_unreferenced_task_awaiting_other_thread_survives_gc(backend, run) -> None:
    """A result on its way from another thread: a stock executor future, or a
    Rust future on tokio."""
    pool = concurrent.futures.ThreadPoolExecutor(1)

    async def main():
        got: list[object] = []

        async def waiter():
            if backend == "executor":
                got.append(await asyncio.wrap_future(pool.submit(time.sleep, 0.05)))
            else:
                got.append(await _ra._rust_sleep(0.05, None))

        asyncio.get_running_loop().create_task(waiter())
        await asyncio.sleep(0.01)
        for _ in range(3):
            gc.collect()
        for _ in range(20):
            await asyncio.sleep(0.01)
            if got:
                break
        return got

    try:
        assert run(main()) == [None]
    finally:
        pool.shutdown()


@pytest.mark.parametrize("how", ["sleep", "gather"])
def test_task_parked_in_sleep_inf_survives_gc(impl, run, how, loop_kind) -> None:
    """`await sleep(math.inf)` (or `gather(sleep(math.inf))`) with no other
    reference to the task: stock keeps it through the loop's
    `call_later(inf)` handle."""
    skip_on_rloop(loop_kind, RLOOP_INFINITE_TIMER)

    async def main():
        state: list[str] = []

        async def parked():
            try:
                if how == "sleep":
                    await impl.sleep(math.inf)
                else:
                    await impl.gather(impl.sleep(math.inf))
            except asyncio.CancelledError:
                state.append("cancelled")
                raise

        asyncio.get_running_loop().create_task(parked())
        await asyncio.sleep(0.01)
        for _ in range(3):
            gc.collect()
        # (stock wraps a gather's sleep in a Task of its own: not counted)
        tasks = [t for t in asyncio.all_tasks() if t.get_coro().__name__ == "parked"]
        assert len(tasks) == 1
        tasks[0].cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return state

    assert run(main()) == ["cancelled"]


# -- awaiting a suspended sleep from a second place --


def test_awaiting_a_suspended_sleep_twice(impl, run) -> None:
    async def main():
        s = impl.sleep(0.02, "r")
        t = asyncio.ensure_future(s)
        await asyncio.sleep(0)
        with pytest.raises(RuntimeError, match="coroutine is being awaited already"):
            await s
        # The first awaiter is unaffected.
        return await t

    assert run(main()) == "r"


# -- cancelled timer entries are compacted while other sleeps fire --


def _heap_entries(loop: asyncio.AbstractEventLoop) -> int:
    """Entries in rustasync's timer heap of a stock loop (0 if none)."""
    for h in loop._scheduled:  # type: ignore[attr-defined]
        cb = getattr(h, "_callback", None)
        if type(cb).__name__ == "_LoopTimers":
            return int(repr(cb).split(":")[1].split()[0])
    return 0


def test_cancelled_sleeps_do_not_accumulate(impl) -> None:
    """A timeout pattern: each round a long sleep is cancelled while a short
    live one fires. Stock compacts its cancelled handles; so must we."""

    async def main():
        loop = asyncio.get_running_loop()
        for _ in range(3000):
            t = loop.create_task(impl.sleep(3600))
            await impl.sleep(0)
            t.cancel()
            await impl.sleep(1e-6)
        await asyncio.sleep(0)
        return len(loop._scheduled) + _heap_entries(loop)  # type: ignore[attr-defined]

    assert asyncio.run(main()) < 300


# -- a receiver whose loop is closed gives its item back --


def test_item_sent_to_receiver_of_closed_loop_is_not_lost(loop_kind) -> None:
    skip_on_rloop(loop_kind, RLOOP_CLOSE_KEEPS_CALLBACKS)
    ch: rustasync.Channel[str] = rustasync.Channel()
    loop = new_loop(loop_kind)
    task = loop.create_task(ch.recv())
    loop.run_until_complete(asyncio.sleep(0.01))
    loop.close()  # the receive is left pending on a closed loop
    ch.send_nowait("item")  # same thread: the wakeup finds the loop closed
    assert ch.recv_nowait() == "item"
    assert ch.stats()["waiting_receivers"] == 0
    assert ch.stats()["received"] == 1
    task._log_destroy_pending = False  # type: ignore[attr-defined]


def test_item_goes_to_live_receiver_behind_dead_one(loop_kind) -> None:
    ch: rustasync.Channel[str] = rustasync.Channel()
    dead = new_loop(loop_kind)
    t1 = dead.create_task(ch.recv())
    dead.run_until_complete(asyncio.sleep(0.01))
    dead.close()
    t1._log_destroy_pending = False  # type: ignore[attr-defined]

    async def live():
        loop = asyncio.get_running_loop()
        t2 = loop.create_task(ch.recv())
        await asyncio.sleep(0.01)
        threading.Thread(target=ch.send_nowait, args=("item",)).start()
        return await asyncio.wait_for(t2, 5)

    with asyncio.Runner(loop_factory=lambda: new_loop(loop_kind)) as r:
        assert r.run(live()) == "item"


# -- no Python object dropped under a Rust lock: finalisers may re-enter --


class _Reenter:
    """An item whose finaliser touches the channel and the op holding it."""

    def __init__(self, ch: rustasync.Channel[object]) -> None:
        self.ch = ch
        self.op: object = None
        self.ran: list[str] = []

    def __del__(self) -> None:
        self.ch.stats()
        self.ch.close()
        if self.op is not None:
            self.op.close()  # type: ignore[attr-defined]
        self.ran.append("del")


def test_send_item_finaliser_reenters_channel_and_op(run) -> None:
    ran: list[str] = []

    async def main():
        ch: rustasync.Channel[object] = rustasync.Channel(1)
        ch.send_nowait(0)
        item = _Reenter(ch)
        item.ran = ran
        op = ch.send(item)
        item.op = op
        del item
        task = asyncio.get_running_loop().create_task(_await(op))
        await asyncio.sleep(0.01)
        ch.close()  # the waiting send gives up and drops the item
        with pytest.raises(rustasync.ChannelClosed):
            await task

    async def _await(op):
        await op

    run(main())
    gc.collect()
    assert ran == ["del"]


def test_send_many_item_finaliser_reenters(run) -> None:
    ran: list[str] = []

    async def main():
        ch: rustasync.Channel[object] = rustasync.Channel(1)
        ch.send_nowait(0)
        items = [_Reenter(ch) for _ in range(3)]
        for i in items:
            i.ran = ran
        op = ch.send_many(items)
        for i in items:
            i.op = op
        del items, i
        task = asyncio.get_running_loop().create_task(_await(op))
        await asyncio.sleep(0.01)
        ch.close()
        with pytest.raises(rustasync.ChannelClosed):
            await task
        del task, op

    async def _await(op):
        await op

    run(main())
    gc.collect()
    assert ran == ["del"] * 3


# -- per-loop state never keeps a loop alive; fds are released --

_ACCOUNTING = r"""
import asyncio, gc, os, sys, warnings, weakref
warnings.simplefilter("ignore")
import rustasync
from rustasync import _rustasync as _ra
kind, impl = sys.argv[1], sys.argv[2]
new_loop = asyncio.new_event_loop if kind == "asyncio" else __import__(kind).new_event_loop

def fds():
    return len(os.listdir("/proc/self/fd"))

async def use_stock():
    q = asyncio.Queue()
    loop = asyncio.get_running_loop()
    g = loop.create_task(q.get())
    await asyncio.sleep(0.001)
    await asyncio.gather(asyncio.sleep(0), asyncio.sleep(0.001))
    await loop.run_in_executor(None, int)
    q.put_nowait(2)
    assert await g == 2
    t = loop.create_task(asyncio.sleep(math_inf))
    await asyncio.sleep(0)
    t.cancel()
    await asyncio.gather(t, return_exceptions=True)

async def use_rustasync():
    ch = rustasync.Channel()
    q = rustasync.Queue()
    loop = asyncio.get_running_loop()
    r = loop.create_task(ch.recv())
    g = loop.create_task(q.get())
    await rustasync.sleep(0.001)
    await rustasync.gather(rustasync.sleep(0), rustasync.sleep(0.001))
    await _ra._rust_yield(1)
    await _ra._rust_sleep(0.001, 2)
    ch.send_nowait(1)
    q.put_nowait(2)
    assert await r == 1 and await g == 2
    t = loop.create_task(rustasync.sleep(math_inf))
    await rustasync.sleep(0)
    t.cancel()
    await asyncio.gather(t, return_exceptions=True)

math_inf = float("inf")
use_everything = use_rustasync if impl == "rustasync" else use_stock

def dropped_loops(n):
    refs = []
    for _ in range(n):
        loop = new_loop()
        loop.run_until_complete(use_everything())
        refs.append(weakref.ref(loop))
        del loop  # never closed
    for _ in range(3):
        gc.collect()
    return sum(r() is not None for r in refs)

def alternating(n):
    a, b = new_loop(), new_loop()
    counts = []
    for i in range(n):
        (a if i % 2 else b).run_until_complete(use_everything())
        if i in (10, n - 1):
            readers = [len(l._selector.get_map()) for l in (a, b) if hasattr(l, "_selector")]
            counts.append((fds(), readers))
    a.close(); b.close()
    return counts

dropped_loops(3)  # warm up: the runtime, the waker thread
base = fds()
alive = dropped_loops(100)
for _ in range(3):
    gc.collect()
after = fds()
counts = alternating(1000)
print(alive, after - base, counts[0] == counts[1], counts)
"""


def _accounting(kind: str, impl: str) -> tuple[int, int, bool, str]:
    out = subprocess.run(
        [sys.executable, "-c", _ACCOUNTING, kind, impl],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    alive, fd_growth, constant, counts = out.stdout.split(" ", 3)
    return int(alive), int(fd_growth), constant == "True", out.stdout


@pytest.mark.parametrize("kind", LOOP_KINDS)
def test_loops_collected_and_fds_constant(kind) -> None:
    """100 dropped, unclosed loops that used sleep, gather, Queue, Channel and
    the bridge: as many are collected, and as few fds kept, as with stock
    primitives on the same loop kind (the stock loop collects them all;
    uvloop collects none, with or without rustasync). 1000 runs alternating
    between two open loops keep the fd count and registered readers flat."""
    s_alive, s_fds, s_flat, s_out = _accounting(kind, "asyncio")
    r_alive, r_fds, r_flat, r_out = _accounting(kind, "rustasync")
    assert r_alive <= s_alive, (s_out, r_out)
    # A loop uvloop never frees keeps what it owns: rustasync's socket pair
    # (2 fds) goes with its loop, never outlives it.
    assert r_fds <= s_fds + 2 * r_alive + 2, (s_out, r_out)
    assert s_flat and r_flat, (s_out, r_out)
    if kind == "asyncio":
        assert r_alive == 0 and r_fds <= 2, r_out


def test_dropped_loop_is_collected_in_process() -> None:
    """The same in this process, for one loop, without a subprocess."""
    import warnings

    loop = asyncio.new_event_loop()
    ch: rustasync.Channel[int] = rustasync.Channel()

    async def body():
        t = asyncio.get_running_loop().create_task(ch.recv())
        await rustasync.sleep(0.001)
        await _ra._rust_yield(None)
        ch.send_nowait(1)
        return await t

    assert loop.run_until_complete(body()) == 1
    ref = weakref.ref(loop)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        del loop
        for _ in range(3):
            gc.collect()
    assert ref() is None
    loop = asyncio.new_event_loop()
    loop.close()


# -- fork: the bridge, Channel and the asyncq engine work in a child --

_FORK = r"""
import asyncio, os, sys, warnings
warnings.simplefilter("ignore")
import rustasync
from rustasync import _rustasync as _ra

async def work():
    ch = rustasync.Channel(64)
    prod = _ra._rust_produce(ch, 2000)
    got = []
    async def consume():
        async for x in ch:
            got.append(x)
    c = asyncio.get_running_loop().create_task(consume())
    n = await prod
    ch.close()
    await c
    assert n == 2000 and got == list(range(2000)), (n, len(got))
    assert await _ra._rust_yield("y") == "y"
    assert await _ra._rust_sleep(0.001, "s") == "s"
    from rustasync import _asyncq_engine
    lines = []
    summary = await _asyncq_engine.run(
        2, 3, seed=7, zero_sleep=True, items_per_producer=50, emit=lines.extend
    )
    assert summary["produced"] == summary["consumed"] == 100, summary
    return "ok"

def child_main():
    return asyncio.run(asyncio.wait_for(work(), 20))

print("parent", asyncio.run(work()), flush=True)
how = sys.argv[1]
if how == "os.fork":
    pid = os.fork()
    if pid == 0:
        try:
            ok = child_main() == "ok"
        except BaseException as e:
            print("child failed", repr(e), flush=True)
            ok = False
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    print("child", os.waitstatus_to_exitcode(status), flush=True)
else:
    import multiprocessing as mp
    with mp.get_context("fork").Pool(2) as pool:
        print("child", pool.apply_async(child_main).get(60), flush=True)
"""


@pytest.mark.parametrize("how", ["os.fork", "multiprocessing"])
def test_bridge_and_channel_work_after_fork(how) -> None:
    out = subprocess.run(
        [sys.executable, "-c", _FORK, how], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split("\n")
    assert lines[0] == "parent ok", out.stdout + out.stderr
    assert lines[1] in ("child 0", "child ok"), out.stdout + out.stderr


# -- dead loops found by review: each once a defect --

_DEAD_RECEIVERS = r"""
import asyncio, sys, warnings
warnings.simplefilter("ignore")
import rustasync
kind, n = sys.argv[1], int(sys.argv[2])
new_loop = asyncio.new_event_loop if kind == "asyncio" else __import__(kind).new_event_loop
ch = rustasync.Channel()
a = new_loop()
ts = [a.create_task(ch.recv()) for _ in range(n)]
a.run_until_complete(asyncio.sleep(0.05))
a.close()
for t in ts:
    t._log_destroy_pending = False
ch.send_nowait("item")
print(ch.recv_nowait(), ch.stats()["waiting_receivers"])
"""


@pytest.mark.parametrize("kind", LOOP_KINDS)
def test_many_receivers_on_a_closed_loop_give_item_back_without_recursion(kind) -> None:
    """50,000 receivers left on a closed loop: the item passes along them to
    the channel without one stack frame per receiver (was a SIGSEGV)."""
    skip_on_rloop(kind, RLOOP_CLOSE_KEEPS_CALLBACKS)
    out = subprocess.run(
        [sys.executable, "-c", _DEAD_RECEIVERS, kind, "50000"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["item", "0"]


def test_tokio_sender_to_receiver_of_closed_loop_loses_nothing(loop_kind) -> None:
    """A tokio worker cannot ask whether a loop is closed; closing the loop
    itself (its reader goes) marks the loop's waker dead."""
    skip_on_rloop(loop_kind, RLOOP_CLOSE_KEEPS_CALLBACKS)
    ch: rustasync.Channel[int] = rustasync.Channel()
    a, b = new_loop(loop_kind), new_loop(loop_kind)
    try:
        b.run_until_complete(_await_rust_yield())  # b's waker made first
        t = a.create_task(ch.recv())
        a.run_until_complete(asyncio.sleep(0.01))
        a.close()
        t._log_destroy_pending = False  # type: ignore[attr-defined]

        async def live():
            r = asyncio.get_running_loop().create_task(ch.recv())
            await asyncio.sleep(0.01)
            assert await _ra._rust_produce(ch, 2) == 2
            got = [await asyncio.wait_for(r, 5)]
            while not ch.empty():
                got.append(ch.recv_nowait())
            return got

        assert b.run_until_complete(live()) == [0, 1]
    finally:
        b.close()


async def _await_rust_sleep() -> None:
    await _ra._rust_sleep(0.05, None)


async def _await_rust_yield() -> None:
    await _ra._rust_yield(0)


def test_sender_parked_on_closed_loop_passes_its_permit_on(loop_kind) -> None:
    """(asyncio.Queue belongs to one loop: there is no stock equivalent.)"""
    skip_on_rloop(loop_kind, RLOOP_CLOSE_KEEPS_CALLBACKS)
    q: rustasync.Channel[object] = rustasync.Channel(1)
    put, put_nowait, get_nowait = q.send, q.send_nowait, q.recv_nowait
    put_nowait("first")
    dead = new_loop(loop_kind)
    t = dead.create_task(put("from-dead-loop"))
    dead.run_until_complete(asyncio.sleep(0.01))
    dead.close()
    t._log_destroy_pending = False  # type: ignore[attr-defined]
    assert get_nowait() == "first"
    for i in range(3):
        put_nowait(i)  # never stuck "full" behind a sender that cannot run
        assert get_nowait() == i


def test_closed_loops_with_rust_future_finishing_after_close_are_collected(loop_kind) -> None:
    import warnings

    refs = []

    def one() -> None:
        loop = new_loop(loop_kind)
        t = loop.create_task(_await_rust_sleep())
        loop.run_until_complete(asyncio.sleep(0.01))
        t._log_destroy_pending = False  # type: ignore[attr-defined]
        loop.close()
        refs.append(weakref.ref(loop))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(10):
            th = threading.Thread(target=one)
            th.start()
            th.join()
        time.sleep(0.2)  # the Rust futures finish after their loops closed
        for _ in range(3):
            gc.collect()
    if loop_kind == "asyncio":  # uvloop frees no loop without close() help
        assert sum(r() is not None for r in refs) == 0


class _Item:
    def __init__(self, name: str) -> None:
        self.name = name
        self.ch: object = None


def test_gc_keeps_items_a_live_receive_will_get(run) -> None:
    """The channel object in a garbage cycle with its items must not clear
    items that an operation in flight shares."""

    async def main():
        ch: rustasync.Channel[_Item] = rustasync.Channel()
        item = _Item("a")
        item.ch = ch  # item -> channel -> item
        ch.send_nowait(item)
        op = ch.recv()
        del ch, item
        gc.collect()
        got = await asyncio.wait_for(_await(op), 2)
        return got.name

    async def _await(op):
        return await op

    assert run(main()) == "a"


# -- drops while an exception propagates; finished operations --

_DROP_WITH_EXCEPTION_IN_FLIGHT = r"""
import asyncio, sys, warnings
warnings.simplefilter("ignore")
import rustasync
impl = sys.argv[1]
mod = asyncio if impl == "asyncio" else rustasync

def use(*a):
    pass

def panic():
    raise rustasync.RustPanic("boom")

def fail():
    raise ValueError("in flight")

# a never-awaited sleep freed while a panic propagates
for _ in range(2):
    try:
        use(mod.sleep(1), panic())
    except BaseException as e:
        print("caught", type(e).__name__)

async def main():
    if impl == "asyncio":
        q = asyncio.Queue(); recv, send_nowait = q.get, q.put_nowait
    else:
        q = rustasync.Channel(); recv, send_nowait = q.recv, q.send_nowait
    holder = [recv()]
    holder[0].send(None)  # waits, first in line
    r2 = asyncio.ensure_future(recv())
    await asyncio.sleep(0)
    send_nowait("item")  # handed to the first receive
    try:
        use(holder.pop(), fail())  # freed with ValueError pending: gives it on
    except BaseException as e:
        print("caught", type(e).__name__)
    print("second got", await asyncio.wait_for(r2, 2))

asyncio.run(main())
"""


@pytest.mark.parametrize("which", ["asyncio", "rustasync"])
def test_operations_freed_while_an_exception_propagates(which) -> None:
    out = subprocess.run(
        [sys.executable, "-c", _DROP_WITH_EXCEPTION_IN_FLIGHT, which],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split("\n")[:4] == [
        "caught PanicException",
        "caught PanicException",
        "caught ValueError",
        "second got item",
    ], out.stdout


def test_finished_send_many_cannot_be_reused_and_counts_truly(run) -> None:
    async def main():
        ch: rustasync.Channel[int] = rustasync.Channel(2)
        op = ch.send_many([1, 2])
        assert await op == 2
        with pytest.raises(RuntimeError, match="cannot reuse"):
            await op
        op2 = ch.send_many([3])
        op2.close()
        with pytest.raises(RuntimeError, match="cannot reuse"):
            await op2
        assert op2.sent == 0 and ch.qsize() == 2

    run(main())


def test_send_many_failing_to_wait_keeps_its_head_item() -> None:
    ch: rustasync.Channel[str] = rustasync.Channel(1)
    ch.send_nowait("x")
    op = ch.send_many(["a"])
    with pytest.raises(RuntimeError, match="no running event loop"):
        op.send(None)
    assert op.sent == 0 and ch.stats()["sent"] == 1


def test_cycle_through_channel_items_with_a_finished_op_is_collected(impl_mod, run) -> None:
    """A worker keeps its last batch-send operation (to read `.sent`); the
    cycle worker -> channel -> item -> worker is collected as on asyncio."""

    async def stock_put_many(q, items):
        for x in items:
            await q.put(x)
        return len(items)

    class Worker:
        def __init__(self) -> None:
            if impl_mod == "asyncio":
                self.q: Any = asyncio.Queue()
                self.put_many = lambda xs: stock_put_many(self.q, xs)
            else:
                self.q = rustasync.Channel()
                self.put_many = self.q.send_many

        def job(self) -> None:
            pass

    async def main():
        w = Worker()
        w.last = w.put_many([w.job] * 3)  # type: ignore[attr-defined]
        await w.last  # type: ignore[attr-defined]
        ref = weakref.ref(w)
        del w
        for _ in range(3):
            gc.collect()
        return ref() is None

    assert run(main())


@pytest.fixture(params=["asyncio", "rustasync"])
def impl_mod(request: pytest.FixtureRequest) -> str:
    return request.param
