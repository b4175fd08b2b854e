"""rustasync.Channel: semantics, cancellation, closing, threads and loops."""

import asyncio
import gc
import random
import threading
import time
import warnings
import weakref

import pytest
from conftest import new_loop

import rustasync
from rustasync import Channel, ChannelClosed
from rustasync import _rustasync as _ra

# ----------------------------------------------------------------- basics


def test_nowait_fifo_capacity_and_stats():
    ch = Channel(3)
    assert ch.maxsize == 3 and ch.empty() and not ch.full()
    for i in range(3):
        ch.send_nowait(i)
    assert ch.full() and len(ch) == 3 and ch.qsize() == 3
    with pytest.raises(asyncio.QueueFull):
        ch.send_nowait(99)
    assert [ch.recv_nowait() for _ in range(3)] == [0, 1, 2]
    with pytest.raises(asyncio.QueueEmpty):
        ch.recv_nowait()
    assert ch.stats() == {
        "qsize": 0,
        "maxsize": 3,
        "closed": False,
        "waiting_senders": 0,
        "waiting_receivers": 0,
        "sent": 3,
        "received": 3,
        "reserved": 0,
    }


@pytest.mark.parametrize("maxsize", [None, 0, -5])
def test_unbounded(maxsize):
    ch = Channel(maxsize)
    assert ch.maxsize == 0
    for i in range(10_000):
        ch.send_nowait(i)
    assert len(ch) == 10_000 and not ch.full()


def test_generic_alias_and_repr():
    assert Channel[int] is not None
    assert "maxsize=2" in repr(Channel(2))


@pytest.mark.parametrize("bad", ["3", 2.5, True, object()])
def test_bad_maxsize_type(bad):
    with pytest.raises(TypeError, match="maxsize"):
        Channel(bad)


def test_bad_arguments():
    ch = Channel()
    for bad in (0, -1):
        with pytest.raises(ValueError, match="max_items"):
            ch.recv_many(bad)
        with pytest.raises(ValueError, match="max_items"):
            ch.recv_many_blocking(bad)
    with pytest.raises(TypeError, match="max_items"):
        ch.recv_many("3")
    with pytest.raises(ValueError, match="timeout"):
        ch.recv_blocking(timeout=-1)
    with pytest.raises(ValueError, match="timeout"):
        ch.send_blocking(1, timeout=-0.5)
    with pytest.raises(ValueError, match="timeout"):
        ch.recv_many_blocking(2, timeout=float("nan"))
    assert len(ch) == 0


def test_docs_state_cancel_safety():
    # (slot methods such as __anext__ keep CPython's fixed docstrings)
    for meth in ("send", "recv", "recv_many", "send_many"):
        assert "Cancel safety" in getattr(Channel, meth).__doc__, meth
    assert "Cancel safety" in _ra.RecvOp.__doc__
    assert "Cancel safety" in _ra.SendOp.__doc__


# ------------------------------------------------------------- async basics


def test_async_send_recv_and_batches(run):
    async def main():
        ch = Channel(4)
        await ch.send(1)
        await ch.send_many([2, 3, 4, 5, 6])  # waits for room twice

    async def main2():
        ch = Channel(4)
        sender = asyncio.create_task(ch.send_many(range(10)))
        got = []
        while len(got) < 10:
            got += await ch.recv_many(3)
        await sender
        assert got == list(range(10))
        assert await asyncio.wait_for(ch.send(10), 1) is None
        assert await ch.recv() == 10

    async def waits():
        ch = Channel()
        t = asyncio.create_task(ch.recv())
        await asyncio.sleep(0.01)
        assert not t.done() and ch.stats()["waiting_receivers"] == 1
        ch.send_nowait("x")
        assert await t == "x"

    run(main2())
    run(waits())


def test_tuple_and_exception_values(run):
    async def main():
        ch = Channel()
        e = ValueError("v")
        for v in [(1, 2), (), e, None]:
            ch.send_nowait(v)
        assert await ch.recv() == (1, 2)
        assert await ch.recv() == ()
        assert await ch.recv() is e
        assert await ch.recv() is None
        # Through the suspending path too.
        t = asyncio.create_task(ch.recv())
        await asyncio.sleep(0)
        ch.send_nowait((3,))
        assert await t == (3,)

    run(main())


def test_op_cannot_be_awaited_twice(run):
    async def main():
        ch = Channel()
        ch.send_nowait(1)
        op = ch.recv()
        assert await op == 1
        with pytest.raises(RuntimeError):
            await op

    run(main())


# -------------------------------------------------------------------- close


def test_close_drains_then_ends(run):
    async def main():
        ch = Channel()
        for i in range(3):
            await ch.send(i)
        assert ch.close() is True and ch.close() is False and ch.closed
        with pytest.raises(ChannelClosed):
            await ch.send(9)
        with pytest.raises(ChannelClosed):
            ch.send_nowait(9)
        assert [x async for x in ch] == [0, 1, 2]
        with pytest.raises(ChannelClosed):
            await ch.recv()
        with pytest.raises(ChannelClosed):
            ch.recv_nowait()
        with pytest.raises(ChannelClosed):
            ch.recv_blocking()
        with pytest.raises(ChannelClosed):
            await ch.recv_many(5)

    run(main())


def test_close_wakes_waiting_receivers_and_senders(run):
    async def main():
        ch = Channel(1)
        receivers = [asyncio.create_task(Channel.recv(empty)) for empty in [Channel()] * 0]
        empty = Channel()
        receivers = [asyncio.create_task(empty.recv()) for _ in range(3)]
        it = asyncio.create_task(anext(aiter(empty), "ended"))
        await ch.send(0)
        senders = [asyncio.create_task(ch.send(i)) for i in range(1, 4)]
        await asyncio.sleep(0.01)
        assert ch.stats()["waiting_senders"] == 3
        empty.close()
        ch.close()
        for r in receivers:
            with pytest.raises(ChannelClosed):
                await r
        assert await it == "ended"
        for s in senders:
            with pytest.raises(ChannelClosed):
                await s
        # Only the item sent before the close is there.
        assert [x async for x in ch] == [0]

    run(main())


def test_close_from_another_thread_wakes_async_for(run):
    async def main():
        ch = Channel()

        def feed():
            for i in range(100):
                ch.send_blocking(i)
            ch.close()

        t = threading.Thread(target=feed)
        t.start()
        got = [x async for x in ch]
        t.join()
        assert got == list(range(100))

    run(main())


# ------------------------------------------------------------- cancellation


def test_cancelled_recv_consumes_nothing(run):
    async def main():
        ch = Channel()
        t = asyncio.create_task(ch.recv())
        await asyncio.sleep(0.01)
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        assert ch.stats()["waiting_receivers"] == 0
        ch.send_nowait(1)
        assert ch.recv_nowait() == 1

    run(main())


def test_cancel_after_handoff_puts_item_back_in_front(run):
    async def main():
        ch = Channel()
        t = asyncio.create_task(ch.recv())
        await asyncio.sleep(0)  # now waiting
        ch.send_nowait("a")  # handed to the waiting receiver
        ch.send_nowait("b")
        t.cancel()  # before it could run
        with pytest.raises(asyncio.CancelledError):
            await t
        assert [ch.recv_nowait(), ch.recv_nowait()] == ["a", "b"]
        s = ch.stats()
        assert s["sent"] == s["received"] == 2

    run(main())


def test_cancel_after_handoff_passes_item_to_next_receiver(run):
    async def main():
        ch = Channel()
        t1 = asyncio.create_task(ch.recv())
        await asyncio.sleep(0)
        t2 = asyncio.create_task(ch.recv())
        await asyncio.sleep(0)
        ch.send_nowait("a")
        t1.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t1
        assert await asyncio.wait_for(t2, 1) == "a"

    run(main())


def test_cancelled_send_leaves_nothing_behind(run):
    async def main():
        ch = Channel(1)
        ch.send_nowait("first")
        s1 = asyncio.create_task(ch.send("second"))
        s2 = asyncio.create_task(ch.send("third"))
        await asyncio.sleep(0.01)
        s1.cancel()
        with pytest.raises(asyncio.CancelledError):
            await s1
        assert ch.recv_nowait() == "first"  # room: permit goes to s2
        await asyncio.wait_for(s2, 1)
        assert ch.recv_nowait() == "third"
        with pytest.raises(asyncio.QueueEmpty):
            ch.recv_nowait()

        # Cancelled after its permit was granted but before it ran.
        ch.send_nowait("x")
        s3 = asyncio.create_task(ch.send("y"))
        await asyncio.sleep(0)
        assert ch.recv_nowait() == "x"
        s3.cancel()
        with pytest.raises(asyncio.CancelledError):
            await s3
        assert len(ch) == 0 and ch.stats()["waiting_senders"] == 0
        ch.send_nowait("z")  # the permit was given back
        assert ch.recv_nowait() == "z"

    run(main())


def test_wait_for_timeouts_lose_nothing(run):
    async def main():
        ch = Channel()
        got = []

        async def consumer():
            while len(got) < 2000:
                try:
                    got.append(await asyncio.wait_for(ch.recv(), 0.0001))
                except TimeoutError:
                    pass

        async def producer():
            for i in range(2000):
                ch.send_nowait(i)
                if i % 7 == 0:
                    await asyncio.sleep(0)

        await asyncio.gather(consumer(), producer())
        assert sorted(got) == list(range(2000))

    run(main())


def test_send_many_cancelled_sends_a_prefix(run):
    async def main():
        ch = Channel(3)
        t = asyncio.create_task(ch.send_many(range(10)))
        await asyncio.sleep(0.01)
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        assert [ch.recv_nowait() for _ in range(len(ch))] == [0, 1, 2]
        assert ch.stats()["sent"] == 3

    run(main())


# ------------------------------------------------------ threads and timeouts


def test_blocking_timeouts():
    ch = Channel(1)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        ch.recv_blocking(timeout=0.05)
    with pytest.raises(TimeoutError):
        ch.recv_many_blocking(3, timeout=0.05)
    ch.send_blocking(1, timeout=0)
    with pytest.raises(TimeoutError):
        ch.send_blocking(2, timeout=0.05)
    assert time.monotonic() - t0 >= 0.14
    assert ch.stats()["waiting_senders"] == 0
    assert ch.recv_many_blocking(5, timeout=0) == [1]


def test_blocking_releases_the_interpreter():
    ch = Channel()
    counter = 0
    stop = threading.Event()

    def spin():
        nonlocal counter
        while not stop.is_set():
            counter += 1

    t = threading.Thread(target=spin)
    t.start()
    with pytest.raises(TimeoutError):
        ch.recv_blocking(timeout=0.2)
    stop.set()
    t.join()
    assert counter > 1000


def test_thread_and_task_interplay(run):
    async def main():
        to_thread, to_task = Channel(1), Channel(1)

        def worker():
            for _ in range(200):
                to_task.send_blocking(to_thread.recv_blocking(timeout=5) * 2, timeout=5)

        t = threading.Thread(target=worker)
        t.start()
        for i in range(200):
            await to_thread.send(i)
            assert await to_task.recv() == 2 * i
        t.join()

    run(main())


def test_many_loops_in_many_threads(loop_kind):
    ch = Channel(8)
    results = []

    def loop_thread():
        async def consumer():
            return [x async for x in ch]

        loop = new_loop(loop_kind)
        try:
            results.extend(loop.run_until_complete(consumer()))
        finally:
            loop.close()

    threads = [threading.Thread(target=loop_thread) for _ in range(3)]
    for t in threads:
        t.start()
    ch.send_many_blocking(range(5000))
    ch.close()
    for t in threads:
        t.join()
    assert sorted(results) == list(range(5000))


def test_stress_exactly_once(loop_kind):
    """Producer threads and tasks, consumer threads and tasks on 2 loops,
    with cancellations everywhere: every item arrives exactly once."""
    N = 4000
    ch = Channel(16)
    results: list[int] = []
    lock = threading.Lock()

    def thread_producer(base):
        for i in range(N):
            ch.send_blocking(base + i)

    def thread_consumer():
        local = []
        while True:
            try:
                local += ch.recv_many_blocking(7, timeout=0.001)
            except TimeoutError:
                continue
            except ChannelClosed:
                break
        with lock:
            results.extend(local)

    def loop_thread(base, seed):
        rnd = random.Random(seed)

        async def producer():
            for i in range(N):
                while True:
                    try:
                        await asyncio.wait_for(ch.send(base + i), rnd.choice([0.0001, 1]))
                        break
                    except TimeoutError:
                        continue  # cancelled: not sent, send again

        async def consumer():
            local = []
            while True:
                try:
                    local.append(await asyncio.wait_for(ch.recv(), rnd.choice([0.0001, 0.01, 1])))
                except TimeoutError:
                    continue
                except ChannelClosed:
                    return local

        async def main():
            cons = [asyncio.create_task(consumer()) for _ in range(2)]
            await producer()
            return cons

        loop = new_loop(loop_kind)
        try:
            cons = loop.run_until_complete(main())
            done_producing.wait()
            for got in loop.run_until_complete(asyncio.gather(*cons)):
                with lock:
                    results.extend(got)
        finally:
            loop.close()

    done_producing = threading.Event()
    producers = [threading.Thread(target=thread_producer, args=(k * N,)) for k in range(2)]
    loops = [threading.Thread(target=loop_thread, args=((2 + k) * N, k)) for k in range(2)]
    consumers = [threading.Thread(target=thread_consumer) for _ in range(2)]
    for t in producers + loops + consumers:
        t.start()
    for t in producers:
        t.join()
    # Loop producers finish inside run_until_complete(main()).
    while ch.stats()["sent"] < 4 * N:
        time.sleep(0.01)
    ch.close()
    done_producing.set()
    for t in loops + consumers:
        t.join()
    assert len(results) == 4 * N
    assert sorted(results) == list(range(4 * N))
    s = ch.stats()
    assert s["sent"] == s["received"] == 4 * N
    assert s["waiting_senders"] == s["waiting_receivers"] == 0


# ----------------------------------------------- loops that close, rust side


def test_waiter_on_closed_loop_no_crash_no_loss(loop_kind, capfd):
    ch = Channel()
    loop = new_loop(loop_kind)
    task = loop.create_task(ch.recv())
    loop.run_until_complete(asyncio.sleep(0.01))
    assert ch.stats()["waiting_receivers"] == 1
    loop.close()  # the task is left pending on a closed loop

    def send():
        ch.send_nowait("item")  # wakes a waiter whose loop is closed

    t = threading.Thread(target=send)
    t.start()
    t.join()
    time.sleep(0.05)
    ch.send_nowait("other")
    # The abandoned receive gives its item back when it is collected.
    task._log_destroy_pending = False
    del task
    gc.collect()
    assert [ch.recv_nowait(), ch.recv_nowait()] == ["item", "other"]
    err = capfd.readouterr().err
    assert "Event loop is closed" not in err and "Traceback" not in err


def test_rust_producer_and_collector(run):
    async def main():
        ch = Channel(64)
        collected = _ra._rust_collect(ch)
        assert await _ra._rust_produce(ch, 10_000) == 10_000
        ch.close()
        assert await collected == list(range(10_000))

    run(main())


def test_rust_producer_panic_surfaces_and_process_goes_on(run):
    async def main():
        ch = Channel()
        with pytest.raises(rustasync.RustPanic, match="producer failed at item 5"):
            await _ra._rust_produce(ch, 10, panic_at=5)
        assert [ch.recv_nowait() for _ in range(5)] == [0, 1, 2, 3, 4]
        await ch.send("still works")
        assert await ch.recv() == "still works"

    run(main())


def test_channel_cycles_are_collected():
    class Box:
        pass

    ch = Channel()
    b = Box()
    b.ch = ch
    ch.send_nowait(b)
    r = weakref.ref(b)
    del b, ch
    gc.collect()
    assert r() is None


# -------------------------------------------------- model-based (hypothesis)

from collections import deque  # noqa: E402

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

OPS = st.lists(
    st.one_of(
        st.tuples(st.just("send"), st.integers()),
        st.tuples(st.just("recv"), st.none()),
        st.tuples(st.just("recv_many"), st.integers(1, 5)),
        st.tuples(st.just("send_many"), st.lists(st.integers(), max_size=4)),
        st.tuples(st.just("close"), st.none()),
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(maxsize=st.integers(0, 4), ops=OPS)
def test_matches_a_deque_model(maxsize, ops):
    ch = Channel(maxsize)
    model: deque = deque()
    closed = False
    sent = received = 0
    for op, arg in ops:
        if op == "send":
            if closed:
                with pytest.raises(ChannelClosed):
                    ch.send_nowait(arg)
            elif maxsize and len(model) >= maxsize:
                with pytest.raises(asyncio.QueueFull):
                    ch.send_nowait(arg)
            else:
                ch.send_nowait(arg)
                model.append(arg)
                sent += 1
        elif op == "recv":
            if model:
                assert ch.recv_nowait() == model.popleft()
                received += 1
            else:
                with pytest.raises(ChannelClosed if closed else asyncio.QueueEmpty):
                    ch.recv_nowait()
        elif op == "recv_many":
            if model:
                want = [model.popleft() for _ in range(min(arg, len(model)))]
                assert ch.recv_many_blocking(arg, timeout=0) == want
                received += len(want)
            else:
                with pytest.raises(ChannelClosed if closed else TimeoutError):
                    ch.recv_many_blocking(arg, timeout=0)
        elif op == "send_many":
            room = len(arg) if not maxsize else max(0, min(len(arg), maxsize - len(model)))
            if closed:
                with pytest.raises(ChannelClosed):
                    ch.send_many_blocking(arg, timeout=0)
            elif room < len(arg):
                with pytest.raises(TimeoutError):
                    ch.send_many_blocking(arg, timeout=0)
                model.extend(arg[:room])
                sent += room
            else:
                ch.send_many_blocking(arg, timeout=0)
                model.extend(arg)
                sent += len(arg)
        else:
            assert ch.close() is (not closed)
            closed = True
        s = ch.stats()
        assert (s["qsize"], s["closed"], s["sent"], s["received"]) == (
            len(model),
            closed,
            sent,
            received,
        )


class _Alarm(Exception):
    pass


def test_blocked_main_thread_sees_signal_handlers():
    import signal

    def handler(signum, frame):
        raise _Alarm

    ch = Channel(1)
    old = signal.signal(signal.SIGALRM, handler)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.1)
        t0 = time.monotonic()
        with pytest.raises(_Alarm):
            ch.recv_blocking(timeout=10)
        assert time.monotonic() - t0 < 5
        ch.send_nowait(1)
        signal.setitimer(signal.ITIMER_REAL, 0.1)
        with pytest.raises(_Alarm):
            ch.send_blocking(2, timeout=10)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    s = ch.stats()
    assert s["waiting_receivers"] == s["waiting_senders"] == 0 and len(ch) == 1


def test_interpreter_exit_with_daemon_threads_blocked_in_the_channel():
    import subprocess
    import sys

    script = (
        "import threading, time\n"
        "from rustasync import Channel\n"
        "ch = Channel(1)\n"
        "ch.send_nowait(0)\n"
        "threading.Thread(target=ch.recv_blocking, args=(None,), daemon=True)\n"
        "for _ in range(3):\n"
        "    threading.Thread(target=Channel().recv_blocking, daemon=True).start()\n"
        "    threading.Thread(target=ch.send_blocking, args=(1,), daemon=True).start()\n"
        "time.sleep(0.2)\n"
    )
    for _ in range(3):
        p = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
        assert p.returncode == 0, p.stderr.decode()[-2000:]


# -- what the channel reports agrees with what it does --


def test_full_agrees_with_send_nowait_while_capacity_is_reserved(run) -> None:
    async def main():
        ch: Channel[int] = Channel(1)
        ch.send_nowait(0)
        sender = asyncio.get_running_loop().create_task(ch.send(1))
        await asyncio.sleep(0.01)
        assert ch.full()
        assert ch.recv_nowait() == 0
        # The woken sender holds the one unit of capacity until it runs.
        assert ch.stats()["reserved"] == 1
        assert ch.qsize() == 0
        assert ch.full()
        with pytest.raises(asyncio.QueueFull):
            ch.send_nowait(2)
        assert "reserved=1" in repr(ch)
        await sender
        assert ch.stats()["reserved"] == 0
        assert ch.full() and ch.qsize() == 1
        assert ch.recv_nowait() == 1
        assert not ch.full()
        ch.send_nowait(2)

    run(main())


def test_full_is_false_while_a_receiver_waits(run) -> None:
    async def main():
        ch: Channel[int] = Channel(1)
        r = asyncio.get_running_loop().create_task(ch.recv())
        await asyncio.sleep(0.01)
        assert not ch.full()
        ch.send_nowait(5)
        assert await r == 5

    run(main())


# -- batch sends report how much went in --


def test_send_many_returns_count_and_reports_partial_progress(run) -> None:
    async def main():
        ch: Channel[int] = Channel(2)
        assert await ch.send_many([1, 2]) == 2
        op = ch.send_many(range(10, 20))
        task = asyncio.get_running_loop().create_task(_await(op))
        await asyncio.sleep(0.01)
        assert [ch.recv_nowait(), ch.recv_nowait()] == [1, 2]
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # Exactly the first `op.sent` items went in; a retry sends the rest.
        got = []
        while not ch.empty():
            got.append(ch.recv_nowait())
        assert got == list(range(10, 10 + op.sent))
        assert 1 <= op.sent < 10

        op2 = ch.send_many(range(5))
        t2 = asyncio.get_running_loop().create_task(_await(op2))
        await asyncio.sleep(0.01)
        ch.close()
        with pytest.raises(ChannelClosed) as ei:
            await t2
        assert ei.value.sent == op2.sent == 2

    async def _await(op):
        return await op

    run(main())


def test_send_many_blocking_reports_partial_progress() -> None:
    ch: Channel[int] = Channel(3)
    assert ch.send_many_blocking([1]) == 1
    with pytest.raises(TimeoutError) as ei:
        ch.send_many_blocking(range(5), timeout=0.05)
    assert ei.value.sent == 2
    ch.close()
    with pytest.raises(ChannelClosed) as ei2:
        ch.send_many_blocking([1, 2])
    assert ei2.value.sent == 0


def test_unawaited_channel_ops_warn_like_coroutines() -> None:
    ch: Channel[int] = Channel()
    for make, name in (
        (ch.recv, "recv"),
        (lambda: ch.recv_many(2), "recv_many"),
        (lambda: ch.send(1), "send"),
        (lambda: ch.send_many([1]), "send_many"),
    ):
        with pytest.warns(RuntimeWarning, match=f"coroutine 'Channel.{name}' was never awaited"):
            make()
            gc.collect()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ch.recv().close()
        ch.send(1).close()
        ch.send_many([1]).close()
        gc.collect()
    assert ch.qsize() == 0


def test_awaitable_methods_are_coroutine_functions() -> None:
    import inspect

    ch: Channel[int] = Channel()
    for name in ("send", "send_many", "recv", "recv_many"):
        assert inspect.iscoroutinefunction(getattr(Channel, name)), name
        assert inspect.iscoroutinefunction(getattr(ch, name)), name
        assert asyncio.iscoroutinefunction(getattr(ch, name)), name
    for name in ("send_nowait", "recv_nowait", "send_blocking", "close"):
        assert not inspect.iscoroutinefunction(getattr(ch, name)), name
