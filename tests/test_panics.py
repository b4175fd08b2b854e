"""A Rust panic never aborts the process: it surfaces as `rustasync.RustPanic`.

Faults are injected with the hooks of the `test-hooks` build (src/testhooks.rs):
a panic inside a function call, a method call, a loop callback, an awaitable
step (`__next__`, and the `am_send` slot on 3.11) and `__traverse__`. Each
time the exception reaches Python as `RustPanic` (a `BaseException`, as
PyO3's `PanicException` is), and the loop, the other tasks and the process
carry on.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap

import pytest
from _loops import RLOOP_HANDLER_SIGNATURE, skip_on_rloop
from _tally import TALLY

import rustasync
from rustasync import _rustasync as ext

pytestmark = pytest.mark.skipif(
    not getattr(ext, "_test_hooks", False),
    reason="built without the test-hooks feature (make dev / make install enable it)",
)


def injected(n: int) -> None:
    TALLY["faults injected"] += n


def test_rust_panic_is_a_base_exception() -> None:
    assert issubclass(rustasync.RustPanic, BaseException)
    assert not issubclass(rustasync.RustPanic, Exception)


def test_panic_in_function_call() -> None:
    with pytest.raises(rustasync.RustPanic, match="boom 1"):
        ext._panic_now("boom 1")
    # The interpreter and the extension still work afterwards.
    with pytest.raises(rustasync.RustPanic, match="boom 2"):
        ext._panic_now("boom 2")
    assert rustasync.Queue().qsize() == 0
    injected(2)


def test_panic_in_method_call() -> None:
    hook = ext._PanicOnCall()
    for _ in range(3):
        with pytest.raises(rustasync.RustPanic, match="inside a method"):
            hook.method()
    assert hook.calls == 3
    injected(3)


def test_panic_in_loop_callback_goes_to_the_exception_handler(run, loop_kind) -> None:
    skip_on_rloop(loop_kind, RLOOP_HANDLER_SIGNATURE)
    seen: list[dict] = []
    hook = ext._PanicOnCall()

    async def main():
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, ctx: seen.append(ctx))
        q = rustasync.Queue()

        async def consumer():
            return [await q.get() for _ in range(3)]

        task = asyncio.create_task(consumer())
        for i in range(3):
            loop.call_soon(hook)
            loop.call_soon(hook, i)
            await rustasync.sleep(0.001)
            q.put_nowait(i)
        return await rustasync.gather(task, rustasync.sleep(0.001, "after"))

    assert run(main()) == [[0, 1, 2], "after"]
    assert hook.calls == 6
    assert len(seen) == 6
    assert all(isinstance(ctx["exception"], rustasync.RustPanic) for ctx in seen)
    injected(6)


@pytest.mark.parametrize("steps", [0, 1, 3])
def test_panic_in_awaitable_step_fails_only_its_task(run, steps) -> None:
    async def victim():
        await rustasync.sleep(0)
        await ext._PanicAwaitable(steps)

    async def main():
        bystanders = [asyncio.create_task(rustasync.sleep(0.002, i)) for i in range(5)]
        task = asyncio.create_task(victim())
        with pytest.raises(rustasync.RustPanic, match="awaitable step"):
            await task
        assert task.done() and isinstance(task.exception(), rustasync.RustPanic)
        return await rustasync.gather(*bystanders)

    assert run(main()) == list(range(5))
    injected(1)


def test_panic_in_direct_next_and_send() -> None:
    with pytest.raises(rustasync.RustPanic):
        next(iter(ext._PanicAwaitable(0)))
    aw = ext._PanicAwaitable(1)
    assert next(iter(aw)) is None
    with pytest.raises(rustasync.RustPanic):
        next(iter(aw))
    injected(2)


@pytest.mark.parametrize("return_exceptions", [False, True])
def test_panicking_child_of_gather(run, return_exceptions) -> None:
    async def child():
        await ext._PanicAwaitable(1)

    async def ok(v):
        await rustasync.sleep(0.001)
        return v

    async def main():
        others = [asyncio.ensure_future(ok(i)) for i in range(3)]
        g = rustasync.gather(child(), *others, return_exceptions=return_exceptions)
        if return_exceptions:
            res = await g
            assert isinstance(res[0], rustasync.RustPanic)
            assert res[1:] == [0, 1, 2]
        else:
            with pytest.raises(rustasync.RustPanic):
                await g
        # The other children keep running and finish.
        return await asyncio.gather(*others)

    assert run(main()) == [0, 1, 2]
    injected(1)


def test_panic_inside_taskgroup_child(run) -> None:
    async def main():
        done = []

        async def ok():
            await rustasync.sleep(0.001)
            done.append(1)

        async def bad():
            await ext._PanicAwaitable(0)

        with pytest.raises(BaseExceptionGroup) as info:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(ok())
                tg.create_task(bad())
        assert info.group_contains(rustasync.RustPanic)
        return await rustasync.sleep(0, "loop alive")

    assert run(main()) == "loop alive"
    injected(1)


def test_panic_inside_traverse_does_not_abort() -> None:
    """PyO3 catches a panic in `__traverse__` (the traversal stops early);
    a collection survives it, and the object is collected once disarmed."""
    script = textwrap.dedent(
        """
        import gc, weakref
        from rustasync import _rustasync as ext

        class Box:
            pass

        box = Box()
        hook = ext._PanicOnTraverse(box)
        box.hook = hook
        ref = weakref.ref(box)
        hook.arm(True)
        del box, hook
        for _ in range(3):
            gc.collect()
        ref().hook.arm(False)
        gc.collect()
        print("collected" if ref() is None else "alive")
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "collected"
    assert "panic inside __traverse__" in out.stderr
    injected(out.stderr.count("panic inside __traverse__"))


def test_process_survives_many_panics_in_a_subprocess() -> None:
    """Panics at every hook, many times, then normal work: exit status 0."""
    script = textwrap.dedent(
        """
        import asyncio, rustasync
        from rustasync import _rustasync as ext

        async def main():
            n = 0
            hook = ext._PanicOnCall()
            loop = asyncio.get_running_loop()
            loop.set_exception_handler(lambda l, c: None)
            for i in range(200):
                try:
                    await ext._PanicAwaitable(i % 3)
                except rustasync.RustPanic:
                    n += 1
                loop.call_soon(hook)
            await rustasync.sleep(0.01)
            q = rustasync.Queue()
            await q.put_many(range(10))
            return n, hook.calls, await q.get_many(10)

        print(asyncio.run(main()))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "RUST_BACKTRACE": "0"},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == str((200, 200, list(range(10))))
    injected(400)


def test_panic_inside_a_tokio_task(run) -> None:
    """A Rust future that panics on a tokio worker (bridge.rs) raises
    RustPanic in the awaiting task; the loop and other work go on."""
    bridge_panic = getattr(ext, "_rust_panic", None)
    if bridge_panic is None:
        pytest.skip("this build has no Rust-future bridge")

    async def main():
        ch = rustasync.Channel(4)
        others = asyncio.ensure_future(ext._rust_sleep(0.001, "other"))
        for later in (False, True, True):
            with pytest.raises(rustasync.RustPanic, match="tokio boom"):
                await bridge_panic("tokio boom", later)
        # A producer on tokio panicking midway: the items before it arrive,
        # nothing after, and the channel keeps working.
        with pytest.raises(rustasync.RustPanic, match="producer failed at item 3"):
            await ext._rust_produce(ch, 10, 3)
        got = [ch.recv_nowait() for _ in range(len(ch))]
        ch.send_nowait("after")
        return got, await others, ch.recv_nowait()

    assert run(main()) == ([0, 1, 2], "other", "after")
    injected(4)
