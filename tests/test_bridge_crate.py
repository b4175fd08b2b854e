"""The rustasync-bridge crate: Python awaitables awaited from Rust
(`into_future`), contextvars across the bridge, running on a runtime the
extension owns, and pyo3-async-runtimes calls inside bridged futures."""

import ast
import asyncio
import contextvars
import gc
import subprocess
import sys
import time
import weakref

import pytest

from rustasync import _rustasync as _ra

pytestmark = pytest.mark.skipif(
    not getattr(_ra, "_test_hooks", False), reason="needs the test-hooks build (make install)"
)

var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")


async def wait_until(cond, timeout=2.0):
    """Let the loop run until `cond()` holds (wakeups cross threads)."""
    for _ in range(int(timeout / 0.005)):
        if cond():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition never held")


# -- into_future: values and errors, scheduled on and off the loop's thread --


@pytest.mark.parametrize("early", [True, False])
def test_into_future_result_and_exception(run, early):
    async def value():
        await asyncio.sleep(0)
        return "v"

    async def fails():
        await asyncio.sleep(0)
        raise KeyError("k")

    async def main():
        assert await _ra._bridge_await(value(), early=early) == (True, "v")
        done, exc = await _ra._bridge_await(fails(), early=early)
        assert done and isinstance(exc, KeyError)
        fut = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_later(0.01, fut.set_result, 5)
        assert await _ra._bridge_await(fut, early=early) == (True, 5)
        assert await _ra._rust_await(value()) == "v"

    run(main())


@pytest.mark.parametrize("early", [True, False])
def test_into_future_of_a_plain_future_and_of_an_await_object(run, early):
    """Not coroutines: a future is awaited as it is (ensure_future returns
    it), an object with `__await__` is wrapped in a task."""

    class Awaitable:
        def __await__(self):
            yield from asyncio.sleep(0).__await__()
            return "from __await__"

    async def main():
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        loop.call_soon(fut.set_exception, ValueError("f"))
        done, exc = await _ra._bridge_await(fut, early=early)
        assert done and isinstance(exc, ValueError) and exc.args == ("f",)
        fut = loop.create_future()
        loop.call_soon(fut.cancel, "future msg")
        done, exc = await _ra._bridge_await(fut, early=early)
        assert done and isinstance(exc, asyncio.CancelledError)
        assert exc.args == ("future msg",)
        assert await _ra._bridge_await(Awaitable(), early=early) == (True, "from __await__")

    run(main())


def _outcome_through_a_task(coro_fn):
    """What `task.result()` gives for `coro_fn()` run as a plain task."""

    async def main():
        t = asyncio.ensure_future(coro_fn())
        try:
            return await t
        except BaseException as e:  # noqa: BLE001
            return e

    return main


@pytest.mark.parametrize("early", [True, False])
def test_coroutine_outcomes_match_task_result(run, early):
    """Results, the very exception raised, the CancelledError with its
    message, and a value returned after catching a cancellation: as
    `task.result()` gives them."""
    raised = []

    async def fails():
        await asyncio.sleep(0)
        e = KeyError("k")
        raised.append(e)
        raise e

    async def cancelled_with_message():
        asyncio.current_task().cancel("the message")
        await asyncio.sleep(1)

    async def cancelled_before_start():
        return "never"

    async def survives_cancellation():
        try:
            asyncio.current_task().cancel()
            await asyncio.sleep(1)
        except asyncio.CancelledError:
            return "caught"

    async def main():
        done, exc = await _ra._bridge_await(fails(), early=early)
        assert done and exc is raised[-1]
        done, exc = await _ra._bridge_await(cancelled_with_message(), early=early)
        ref = await _outcome_through_a_task(cancelled_with_message)()
        assert done and type(exc) is type(ref) and exc.args == ref.args == ("the message",)
        assert await _ra._bridge_await(survives_cancellation(), early=early) == (True, "caught")
        assert await _ra._rust_await(survives_cancellation()) == "caught"
        with pytest.raises(KeyError):
            await _ra._rust_await(fails())

    run(main())


def test_task_of_an_awaited_coroutine_reads_as_the_coroutine(run):
    """The task runs a wrapper, but its repr and stack show the coroutine,
    and a failed task's exception counts as retrieved (nothing logged)."""
    seen = {}
    errors = []

    async def inner_coro():
        t = asyncio.current_task()
        seen["repr"] = repr(t)
        seen["stack"] = t.get_stack()
        seen["qualname"] = t.get_coro().__qualname__
        return 1

    async def fails():
        raise ValueError("x")

    async def main():
        asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: errors.append(ctx))
        assert await _ra._rust_await(inner_coro()) == 1
        with pytest.raises(ValueError):
            await _ra._rust_await(fails())
        gc.collect()
        await asyncio.sleep(0)

    run(main())
    assert "inner_coro" in seen["repr"]
    assert seen["stack"] and seen["stack"][-1].f_code.co_name == "inner_coro"
    assert seen["qualname"].endswith("inner_coro")
    assert errors == []


def test_many_awaitables_from_tokio_at_once(run):
    """Thousands of awaitables scheduled from tokio workers (batched)."""

    async def double(i):
        await asyncio.sleep(0)
        return 2 * i

    async def main():
        got = await asyncio.gather(*(_ra._rust_await(double(i)) for i in range(2000)))
        assert got == [2 * i for i in range(2000)]

    run(main())


def test_not_an_awaitable_raises_from_the_rust_future(run):
    async def main():
        done, exc = await _ra._bridge_await(42)
        assert done and isinstance(exc, TypeError)

    run(main())


# -- cancellation in each direction --


@pytest.mark.parametrize("early", [True, False])
def test_dropping_the_rust_future_cancels_the_task(run, early):
    seen = []

    async def forever():
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    async def main():
        assert await _ra._bridge_await(forever(), early=early, timeout=0.05) == (False, None)
        await wait_until(lambda: seen)
        assert seen == ["cancelled"]

    run(main())


def test_cancelling_the_awaiting_task_cancels_the_task_awaited_from_rust(run):
    """Python cancels the outer await -> the Rust future is aborted -> the
    task it was awaiting is cancelled."""
    seen = []

    async def forever():
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    async def main():
        t = asyncio.create_task(_ra._rust_await(forever()))
        await wait_until(lambda: len(asyncio.all_tasks()) >= 3)
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        await wait_until(lambda: seen)

    run(main())


@pytest.mark.parametrize("early", [True, False])
def test_cancelling_the_python_side_resolves_the_rust_future(run, early):
    async def cancels_itself():
        asyncio.current_task().cancel("by itself")
        await asyncio.sleep(1)

    async def main():
        done, exc = await _ra._bridge_await(cancels_itself(), early=early)
        assert done and isinstance(exc, asyncio.CancelledError)
        fut = asyncio.get_running_loop().create_future()
        t = asyncio.create_task(_ra._bridge_await(fut, early=early))
        await asyncio.sleep(0.01)
        fut.cancel()
        done, exc = await t
        assert done and isinstance(exc, asyncio.CancelledError)

    run(main())


# -- contextvars --


def test_awaitables_run_in_a_copy_of_the_callers_context(run):
    async def inner():
        seen = var.get()
        var.set("changed by inner")
        return seen

    async def main():
        var.set("outer")
        assert await _ra._rust_await(inner()) == "outer"
        # A copy, as for asyncio.create_task: the caller's value is kept.
        assert var.get() == "outer"
        assert await _ra._bridge_await(inner(), early=True) == (True, "outer")
        assert var.get() == "outer"

    run(main())


@pytest.mark.parametrize("early", [True, False])
def test_each_kind_of_awaitable_runs_in_its_own_copy_of_the_context(run, early):
    """Coroutines (wrapped) and `__await__` objects (ensure_future) alike;
    a task factory of the older signature (no `context=`) still works."""

    class Reads:
        def __await__(self):
            yield from asyncio.sleep(0).__await__()
            seen = var.get()
            var.set("changed by Reads")
            return seen

    async def reads():
        seen = var.get()
        var.set("changed by reads")
        return seen

    made = []

    def old_factory(loop, coro, **kw):
        # Stock asyncio calls a factory without `context=` when none is
        # given: the older signature keeps working. uvloop always passes it.
        made.append(kw)
        return asyncio.Task(coro, loop=loop, **kw)

    async def main():
        var.set("outer")
        for aw in (reads, Reads, reads):
            assert await _ra._bridge_await(aw(), early=early) == (True, "outer")
            assert var.get() == "outer"
            asyncio.get_running_loop().set_task_factory(old_factory)
        assert len(made) == 2
        if type(asyncio.get_running_loop()).__module__.startswith("asyncio"):
            assert made == [{}, {}]

    run(main())


def test_context_carried_through_nested_bridges(run):
    """Python -> Rust -> Python -> Rust -> Python: each level sees the value
    set before it."""

    async def innermost():
        return var.get()

    async def middle():
        assert var.get() == "top"
        var.set("middle")
        return await _ra._rust_await(innermost())

    async def main():
        var.set("top")
        assert await _ra._rust_await(middle()) == "middle"
        assert var.get() == "top"

    run(main())


# -- interop with pyo3-async-runtimes --


def test_pyo3_async_runtimes_locals_inside_a_bridged_future(run):
    async def main():
        var.set("seen")
        lp, ctx = await _ra._bridge_pyo3_async_runtimes_locals()
        assert lp is asyncio.get_running_loop()
        assert ctx[var] == "seen"

    run(main())


def test_pyo3_async_runtimes_into_future_inside_a_bridged_future(run):
    async def inner():
        await asyncio.sleep(0)
        return var.get()

    async def main():
        var.set("ctx")
        assert await _ra._bridge_await_pyo3_async_runtimes(inner()) == "ctx"

    run(main())


def test_pyo3_async_runtimes_future_into_py_inside_a_bridged_future(run):
    async def main():
        assert await _ra._bridge_nested_pyo3_async_runtimes("n") == "n"

    run(main())


def test_into_future_inside_a_pyo3_async_runtimes_future(run):
    async def inner():
        await asyncio.sleep(0)
        return var.get()

    async def main():
        var.set("theirs")
        assert await _ra._bridge_await_from_pyo3_async_runtimes(inner()) == "theirs"

    run(main())


# -- the runtime: the crate's own, or one the extension owns --

RUNTIME_SCRIPT = """
import asyncio, os, sys
from rustasync import _rustasync as m

async def name():
    return await m._bridge_thread_name()

async def awaited_from_rust():
    return await m._rust_await(asyncio.sleep(0.001, "slept"))

assert asyncio.run(name()).startswith("rustasync-bridge-tokio"), asyncio.run(name())
m._bridge_use_own_runtime("ext-owned")
assert asyncio.run(name()) == "ext-owned", asyncio.run(name())
assert asyncio.run(awaited_from_rust()) == "slept"
if hasattr(os, "fork"):
    pid = os.fork()
    if pid == 0:
        # The parent's runtime has no threads here: the crate's own is used.
        ok = asyncio.run(name()).startswith("rustasync-bridge-tokio")
        os._exit(0 if ok else 3)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, status
    assert asyncio.run(name()) == "ext-owned"
print("ok")
"""


def test_runtime_handle_given_by_the_extension_and_after_fork():
    p = subprocess.run(
        [sys.executable, "-W", "ignore::DeprecationWarning", "-c", RUNTIME_SCRIPT],
        capture_output=True,
        timeout=60,
    )
    assert p.returncode == 0, p.stderr.decode()[-2000:]
    assert p.stdout.decode().strip() == "ok"


_FREED_AFTER_EXIT = """
import asyncio, atexit, gc, time
from rustasync import _rustasync as m
held = []

def after_the_bridge_hook():  # registered first, so it runs after the bridge's hook
    before = m._bridge_sleep_counts()
    held.clear()
    gc.collect()
    time.sleep(0.2)
    print(repr((before, m._bridge_sleep_counts())), flush=True)

atexit.register(after_the_bridge_hook)

async def main():
    for i in range(5):
        held.append(m._bridge_sleep("rustasync-bridge", 60, i))  # never awaited
    await asyncio.sleep(0.1)

asyncio.run(main())
"""


def test_futures_freed_after_the_exit_hook_are_not_dropped():
    """After the exit hook, an awaitable freed (as finalization frees every
    remaining one) leaks its Rust future instead of dropping it on a tokio
    worker while the interpreter finalizes (regression: the abort dropped
    all five)."""
    out = subprocess.run(
        [sys.executable, "-c", _FREED_AFTER_EXIT], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    before, after = ast.literal_eval(out.stdout.strip())
    assert before == after  # (aborted, finished): nothing dropped after the hook


def test_into_future_resolves_when_its_loop_closes():
    """A Rust future awaiting a task whose loop closes resolves with an error,
    and nothing keeps the loop, the task or the coroutine alive (as when a task
    awaits a task on a loop that closes); it used to wait for good."""
    import gc
    import time
    import weakref

    class Sentinel:
        pass

    refs = {}
    loop = asyncio.new_event_loop()

    async def inner(s):
        await asyncio.sleep(3600)

    async def outer():
        s = Sentinel()
        refs["sentinel"] = weakref.ref(s)
        return await _ra._bridge_await(inner(s))

    task = loop.create_task(outer())
    loop.run_until_complete(asyncio.sleep(0.05))
    refs["loop"] = weakref.ref(loop)
    refs["task"] = weakref.ref(task)
    loop.close()
    del task, loop
    deadline = time.monotonic() + 10
    while any(r() is not None for r in refs.values()) and time.monotonic() < deadline:
        _ra._bridge_sleep_counts()  # lets objects released on tokio threads go
        gc.collect()
        time.sleep(0.05)
    assert {k: r() is not None for k, r in refs.items()} == dict.fromkeys(refs, False)


# -- asyncio.run() closing while Rust futures are about to await Python --

_RUN_CLOSE = """
import asyncio, gc
from rustasync import _rustasync as m

def sleep(i):
    return asyncio.sleep(0.003, i)

async def main():
    for i in range(100):
        # Cancelled by asyncio.run() while the Rust future is on its way to
        # scheduling the coroutines it makes (after a trip through tokio).
        asyncio.ensure_future(m._rust_await_each("rustasync-bridge", sleep, 2, True))
    await asyncio.sleep(0.002)

for _ in range(20):
    asyncio.run(main())
gc.collect()
print(sum(isinstance(o, asyncio.Task) for o in gc.get_objects()))
"""


def test_asyncio_run_closing_with_awaits_from_rust_in_flight_is_silent():
    """A coroutine the Rust side was about to schedule when its awaiting task
    was cancelled is never made a task, as when a coroutine is cancelled
    before it reaches `create_task`: no "Task was destroyed but it is
    pending!", no "never awaited" warning, no task left behind (both used
    to be printed in most runs)."""
    for i in range(10):
        p = subprocess.run(
            [sys.executable, "-c", _RUN_CLOSE],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert (p.returncode, p.stdout, p.stderr) == (0, "0\n", ""), (i, p.stderr[-2000:])


def test_an_output_given_up_on_as_the_future_finishes_is_freed(run):
    """A Rust future that finishes (here with an exception) just after its
    awaiting task was cancelled does not keep its output: nothing takes it,
    and an output that leads back to the task (a traceback through the
    frames holding it, as when `asyncio.run` cancels everything) made a
    cycle the collector cannot see (regression: kept for good)."""

    class Boom(Exception):
        pass

    refs = []
    state = {}

    def fail(i):
        time.sleep(0.2)  # on the tokio worker: the task is cancelled meanwhile
        e = Boom()
        e.box = state.pop("box")  # leads back to the awaiting task
        refs.append(weakref.ref(e))
        raise e

    async def main():
        task = asyncio.ensure_future(_ra._rust_await_each("rustasync-bridge", fail, 1, False))
        state["box"] = [task]
        await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await wait_until(lambda: bool(refs))
        await asyncio.sleep(0.05)  # the output reaches the loop

    run(main())
    gc.collect()
    _ra._bridge_sleep_counts()  # lets objects released on tokio threads go
    gc.collect()
    assert refs and refs[0]() is None


# -- the runtime given with init_with_handle shuts down --

_SHUTDOWN = """
import asyncio
from rustasync import _rustasync as m

async def outcome(aw):
    try:
        return repr(await asyncio.wait_for(aw, 10))
    except BaseException as e:
        return f"{type(e).__name__}: {e}"

async def main():
    m._bridge_use_droppable_runtime()
    sleeping = asyncio.ensure_future(outcome(m._rust_sleep(30, "never")))
    awaiting = asyncio.ensure_future(outcome(m._bridge_await(asyncio.sleep(30))))
    await asyncio.sleep(0.05)
    m._bridge_shutdown_runtime()
    print(await sleeping)
    print(await awaiting)
    try:
        m._rust_sleep(0.01, "after")
    except BaseException as e:
        print(f"{type(e).__name__}: {e}")
    m._bridge_use_own_runtime("given-again")
    print(await outcome(m._rust_sleep(0.01, "again")))

asyncio.run(main())
"""


def test_runtime_given_by_the_extension_shuts_down():
    """Futures in flight when the extension's runtime shuts down resolve
    with a RuntimeError naming the cause (they used to wait for good), and
    a call made afterwards raises one at once (it used to panic inside
    tokio); a runtime given afterwards is used."""
    p = subprocess.run(
        [sys.executable, "-c", _SHUTDOWN], capture_output=True, text=True, timeout=60
    )
    assert p.returncode == 0, p.stderr[-2000:]
    lines = p.stdout.splitlines()
    gone = "RuntimeError: the tokio runtime running the Rust future shut down before it finished"
    assert lines[:2] == [gone, gone], lines
    assert lines[2].startswith("RuntimeError: the tokio runtime given with init_with_handle"), lines
    assert lines[3:] == ["'again'"], lines


# -- the awaitable: collection, concurrent awaits, where objects are freed --


def test_a_cycle_through_a_result_never_awaited_is_collected(run):
    """awaitable -> its stored result -> awaitable is collected, as the same
    cycle through `Future.set_result` is (it used to be kept for good)."""

    class Box:
        aw: object = None

    async def main():
        refs = []
        for make in (_ra._rust_ready, _ra._rust_yield):
            b = Box()
            aw = make(b)
            b.aw = aw
            refs.append(weakref.ref(b))
            await wait_until(aw.done)
            del b, aw
        await asyncio.sleep(0.05)  # the result reaches the loop
        gc.collect()
        return [r() is None for r in refs]

    assert run(main()) == [True, True]


@pytest.mark.parametrize("kind", ["coroutine", "rust"])
def test_a_second_concurrent_await_fails_at_once(run, kind):
    """Like a coroutine: awaiting it while another task awaits it raises
    RuntimeError at once, and the first await is unaffected (it used to
    wait with the first and fail only when the result came)."""

    async def value():
        await asyncio.sleep(0.05)
        return "v"

    async def main():
        aw = value() if kind == "coroutine" else _ra._rust_sleep(0.05, "v")

        async def first_await():
            return await aw

        first = asyncio.ensure_future(first_await())
        await asyncio.sleep(0)
        with pytest.raises(RuntimeError, match="is being awaited already"):
            await aw
        assert not first.done()
        return await first

    assert run(main()) == "v"


@pytest.mark.parametrize("how", ["cancelled", "collected"])
def test_objects_held_by_an_aborted_rust_future_are_freed_on_the_loop(run, how):
    """An object held by a Rust future that is aborted (its task cancelled,
    or its awaitable, never awaited, freed) is freed on the loop's thread soon after,
    with nothing but the loop running: it used to wait, on the tokio
    worker that dropped it, for the next call into the extension."""

    class Held:
        pass

    async def main():
        h = Held()
        ref = weakref.ref(h)
        aw = _ra._bridge_hold(h, 30)
        del h

        if how == "cancelled":

            async def hold(a):
                await a

            t = asyncio.ensure_future(hold(aw))
            await asyncio.sleep(0.02)
            t.cancel()
            with pytest.raises(asyncio.CancelledError):
                await t
            del t
        else:
            await asyncio.sleep(0.02)  # never awaited
        del aw
        gc.collect()
        # Only the loop runs here: no call into the extension.
        for _ in range(400):
            if ref() is None:
                return True
            await asyncio.sleep(0.005)
        return False

    assert run(main())


def test_a_second_await_while_the_result_waits_for_delivery_fails(run):
    """A second `await` between the Rust future finishing (its output
    stored, on a tokio worker) and the delivery reaching the loop raises
    RuntimeError, and the first awaiter gets the value (the second used to
    take it, leaving the first waiting for good)."""

    async def main():
        fut = asyncio.get_running_loop().create_future()
        aw = _ra._bridge_await(fut, early=True)  # finishes once fut does

        async def first_await():
            return await aw

        first = asyncio.ensure_future(first_await())
        await asyncio.sleep(0)  # first is suspended on aw
        assert not aw.done()
        fut.set_result(42)
        await asyncio.sleep(0)  # the Rust side hears of it
        # Block the loop until the output is stored: it cannot be delivered.
        while not aw.done():
            time.sleep(0.001)
        with pytest.raises(RuntimeError, match="is being awaited already"):
            await aw
        return await asyncio.wait_for(first, 10)

    assert run(main()) == (True, 42)


_AWAIT_AFTER_EXIT = """
import asyncio, atexit, sys, threading, time
from rustasync import _rustasync as m
seen = []

def outcome(make):
    async def go():
        try:
            return repr(await make())
        except RuntimeError as e:
            return f"RuntimeError: {e}"
    return asyncio.run(go())

def after_the_bridge_hook():  # registered first, so it runs after the bridge's hook
    print(outcome(lambda: m._rust_ready(7)), flush=True)
    print(outcome(lambda: m._rust_sleep(0.01, 7)), flush=True)
    print(outcome(lambda: made_before), flush=True)
    hook_ran.set()
    daemon_done.wait(10)
    for line in seen:
        print(line, flush=True)

atexit.register(after_the_bridge_hook)
hook_ran, daemon_done = threading.Event(), threading.Event()

async def daemon_main():
    made_there = m._rust_sleep(30, 1)
    while not hook_ran.is_set():
        await asyncio.sleep(0.005)
    for make in (lambda: made_there, lambda: m._rust_sleep(0.001, 1)):
        try:
            await make()
        except RuntimeError as e:
            seen.append(f"daemon: RuntimeError: {e}")
    daemon_done.set()

async def make():
    return m._rust_sleep(30, "never")

made_before = asyncio.run(make())
threading.Thread(target=lambda: asyncio.run(daemon_main()), daemon=True).start()
time.sleep(0.1)
"""


def test_awaiting_a_rust_future_after_the_exit_hook_raises():
    """An atexit handler that runs after the bridge's hook (registered
    before the first use) awaiting a Rust future that is not finished gets
    RuntimeError, as `run_in_executor` raises one at exit; so do tasks on
    daemon threads (both used to spin at full CPU, for good). A future
    that is ready when made still gives its value."""
    p = subprocess.run(
        [sys.executable, "-c", _AWAIT_AFTER_EXIT], capture_output=True, text=True, timeout=60
    )
    assert p.returncode == 0, p.stderr[-2000:]
    gone = "RuntimeError: cannot await a Rust future after interpreter shutdown"
    assert p.stdout.splitlines() == ["7", gone, gone, f"daemon: {gone}", f"daemon: {gone}"], (
        p.stdout
    )


_DAEMON_OUTPUT_DEL = """
import asyncio, threading, time
from rustasync import _rustasync as m

class Slow:
    def __del__(self):  # long enough to give the interpreter away
        end = time.perf_counter() + 0.02
        while time.perf_counter() < end:
            pass

async def daemon_main():
    while True:
        rf = m._rust_ready(Slow())  # finished at once, never awaited
        del rf  # its output's __del__ runs beneath the awaitable's dealloc
        await asyncio.sleep(0)

threading.Thread(target=lambda: asyncio.run(daemon_main()), daemon=True).start()
time.sleep(0.2)
"""


def test_exit_while_a_daemon_thread_frees_unawaited_results():
    """A daemon thread freeing awaitables whose stored result runs Python
    code when dropped, while the interpreter exits: the exit hook waits for
    it and results freed after the hook are leaked, so CPython never ends
    the thread inside the crate's frames (it aborted the process, "FATAL:
    exception not rethrown", in about half the runs under -X dev)."""
    for i in range(12):
        p = subprocess.run(
            [sys.executable, "-X", "dev", "-c", _DAEMON_OUTPUT_DEL],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert p.returncode == 0, (i, p.returncode, p.stderr[-2000:])


def test_a_given_up_future_never_touches_asyncio_off_its_loop():
    """A bridged future given up (its task cancelled) while its tokio worker
    waited to schedule an asyncio future leaves that future to the loop's
    thread: it was cancelled on the worker, which asyncio's debug mode
    reports as a non-thread-safe call."""
    unraisable = []
    old_hook = sys.unraisablehook
    old_interval = sys.getswitchinterval()

    async def main():
        loop = asyncio.get_running_loop()
        loop.set_debug(True)
        cancelled = 0
        for _ in range(100):
            fut = loop.create_future()
            fut.add_done_callback(lambda f: None)
            t = asyncio.ensure_future(_ra._bridge_await(fut))
            await asyncio.sleep(0)  # polled once, then on its way through tokio
            end = time.perf_counter() + 0.002
            while time.perf_counter() < end:  # the worker now waits to attach
                pass
            t.cancel()
            with pytest.raises(asyncio.CancelledError):
                await t
            await asyncio.sleep(0.002)
            cancelled += fut.cancelled()
        return cancelled

    sys.unraisablehook = lambda u: unraisable.append(repr(u.exc_value))
    sys.setswitchinterval(0.05)  # the loop keeps the interpreter while it cancels
    try:
        loop = asyncio.new_event_loop()
        try:
            cancelled = loop.run_until_complete(main())
        finally:
            loop.close()
    finally:
        sys.unraisablehook = old_hook
        sys.setswitchinterval(old_interval)
    assert unraisable == []
    assert cancelled > 0  # the race was reached
