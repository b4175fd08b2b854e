"""Rust futures as awaitables, and the asyncq engine."""

import asyncio
import contextvars
import gc
import re
import threading
import time

import pytest
from conftest import new_loop

import rustasync
from rustasync import _asyncq_engine
from rustasync import _rustasync as _ra


def test_values_ready_and_after_tokio(run):
    async def main():
        e = KeyError("k")
        assert await _ra._rust_ready(1) == 1
        assert await _ra._rust_ready((1, 2)) == (1, 2)
        assert await _ra._rust_ready(e) is e
        assert await _ra._rust_yield("y") == "y"
        assert await _ra._rust_yield(()) == ()
        assert await _ra._rust_sleep(0.01, "s") == "s"
        assert await _ra._pyo3_async_runtimes_ready(5) == 5

    run(main())


def test_many_concurrent(run):
    async def main():
        futs = [_ra._rust_yield(i) for i in range(5000)]
        assert sum([await f for f in futs]) == sum(range(5000))
        assert await asyncio.gather(*(_ra._rust_sleep(0.001, i) for i in range(500))) == list(
            range(500)
        )

    run(main())


def test_errors_and_panics(run):
    async def main():
        for later in (False, True):
            with pytest.raises(ValueError, match="bad"):
                await _ra._rust_fail("bad", later)
            with pytest.raises(rustasync.RustPanic, match="boom"):
                await _ra._rust_panic("boom", later)
        # The process and the runtime go on.
        assert await _ra._rust_yield(7) == 7

    run(main())


def test_cancel_drops_the_rust_future(run):
    async def main():
        before = _ra._rust_dropped_count()
        t = asyncio.create_task(_ra._rust_sleep(30, None))
        await asyncio.sleep(0.01)
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(_ra._rust_sleep(30, None), 0.01)
        for _ in range(100):
            if _ra._rust_dropped_count() >= before + 2:
                break
            await asyncio.sleep(0.01)
        assert _ra._rust_dropped_count() >= before + 2

    run(main())


def test_dropping_unawaited_awaitable_drops_the_rust_future(run):
    async def main():
        before = _ra._rust_dropped_count()
        f = _ra._rust_sleep(30, None)
        del f
        gc.collect()
        for _ in range(100):
            if _ra._rust_dropped_count() > before:
                break
            await asyncio.sleep(0.01)
        assert _ra._rust_dropped_count() > before

    run(main())


def test_contextvars_reach_python_code_awaited_from_rust(run):
    var = contextvars.ContextVar("var")

    async def main():
        var.set("outer")

        async def inner():
            return var.get()

        assert await _ra._rust_await(inner()) == "outer"

    run(main())


def test_needs_a_running_loop():
    with pytest.raises(RuntimeError):
        _ra._rust_ready(1)


def test_cannot_await_twice(run):
    async def main():
        f = _ra._rust_ready(1)
        assert await f == 1
        with pytest.raises(RuntimeError):
            await f

    run(main())


def test_completion_after_loop_closed_is_silent(loop_kind, capfd):
    loop = new_loop(loop_kind)

    async def waiter():
        return await _ra._rust_sleep(0.05, 1)

    task = loop.create_task(waiter())
    loop.run_until_complete(asyncio.sleep(0.005))
    loop.close()
    time.sleep(0.15)  # the Rust future completes against a closed loop
    task._log_destroy_pending = False
    del task
    gc.collect()
    err = capfd.readouterr().err
    assert "Event loop is closed" not in err and "Traceback" not in err


def test_loops_in_threads_batched_completions(loop_kind):
    results = []

    def worker(k):
        async def main():
            return sum(await asyncio.gather(*(_ra._rust_yield(i) for i in range(2000))))

        loop = new_loop(loop_kind)
        try:
            results.append(loop.run_until_complete(main()))
        finally:
            loop.close()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [sum(range(2000))] * 3


# ------------------------------------------------------------------ asyncq


def test_asyncq_engine_lines_and_counts(run):
    lines = []

    async def main():
        return await _asyncq_engine.run(3, 4, seed=444, zero_sleep=True, emit=lines.extend)

    r = run(main())
    assert r["produced"] == r["consumed"] > 0
    assert r["lines"] == len(lines)
    got = [ln for ln in lines if " got element <" in ln]
    added = [ln for ln in lines if " added <" in ln]
    assert len(got) == len(added) == r["produced"]
    assert sorted(ln.split("<")[1][:10] for ln in got) == sorted(
        ln.split("<")[1][:10] for ln in added
    )
    assert all(ln.endswith(" seconds.") for ln in got)


ASYNCQ_LINE = re.compile(
    r"(Producer|Consumer) \d+ sleeping for (\d|10) seconds\."
    r"|Producer \d+ added <[0-9a-f]{10}> to queue\."
    r"|Consumer \d+ got element <[0-9a-f]{10}> in \d+\.\d{5} seconds\."
)


@pytest.mark.parametrize("per", [None, 300])
def test_asyncq_text_batches_match_lines(run, per):
    """as_text: one str per batch, every line newline-terminated, the same
    lines (as a multiset) as the list form, in the tutorial's format."""

    async def once(as_text):
        out = []
        emit = out.append if as_text else out.extend
        r = await _asyncq_engine.run(
            3, 4, seed=11, zero_sleep=True, items_per_producer=per, emit=emit, as_text=as_text
        )
        return r, out

    r_text, chunks = run(once(True))
    r_list, lines = run(once(False))
    assert all(isinstance(c, str) and c.endswith("\n") for c in chunks)
    text_lines = "".join(chunks).splitlines()
    assert len(text_lines) == r_text["lines"] == r_list["lines"] == len(lines)
    assert all(ASYNCQ_LINE.fullmatch(ln) for ln in text_lines)

    def masked(ls):  # latencies differ from run to run
        return sorted(re.sub(r"in \d+\.\d{5} seconds", "in T seconds", ln) for ln in ls)

    assert masked(text_lines) == masked(lines)
    added = [ln.split("<")[1][:10] for ln in text_lines if " added <" in ln]
    got = [ln.split("<")[1][:10] for ln in text_lines if " got element <" in ln]
    assert len(set(added)) == len(added) == r_text["produced"]
    assert sorted(got) == sorted(added)


def test_asyncq_yield_every_keeps_items_and_lines(run):
    async def once(every):
        chunks = []
        r = await _asyncq_engine.run(
            3,
            4,
            seed=5,
            zero_sleep=True,
            items_per_producer=500,
            emit=chunks.append,
            as_text=True,
            yield_every=every,
        )
        return r, "".join(chunks).splitlines()

    (r1, lines1), (r64, lines64) = run(once(1)), run(once(64))
    assert r1["produced"] == r1["consumed"] == r64["produced"] == r64["consumed"] == 1500
    assert r1["lines"] == r64["lines"] == len(lines64) == 4 * 1500 + 4

    def items(ls, kind):
        return sorted(ln.split("<")[1][:10] for ln in ls if kind in ln)

    assert items(lines64, " added <") == items(lines64, " got element <")
    assert items(lines64, " added <") == items(lines1, " added <")
    with pytest.raises(ValueError):
        run(_asyncq_engine.run(1, 1, zero_sleep=True, emit=print, yield_every=0))


def test_asyncq_seed_reproduces_items(run):
    async def once():
        lines = []
        await _asyncq_engine.run(2, 2, seed=7, zero_sleep=True, emit=lines.extend)
        return sorted(ln for ln in lines if " added <" in ln)

    assert run(once()) == run(once())


def test_asyncq_real_sleeps_scaled(run):
    async def main():
        t0 = time.monotonic()
        r = await _asyncq_engine.run(
            2, 2, seed=1, items_per_producer=2, sleep_scale=0.001, emit=lambda lines: None
        )
        return r, time.monotonic() - t0

    r, dt = run(main())
    assert r["consumed"] == 4 and dt < 5


def test_asyncq_emit_error_propagates(run):
    def emit(lines):
        raise KeyError("emit failed")

    async def main():
        await _asyncq_engine.run(1, 1, seed=1, zero_sleep=True, emit=emit)

    with pytest.raises(KeyError):
        run(main())


def test_asyncq_shared_runtime(run):
    async def main():
        return await _ra.run_asyncq(
            3, 3, seed=3, zero_sleep=True, items_per_producer=100, shared_runtime=True
        )

    r = run(main())
    assert r["produced"] == r["consumed"] == 300


EXIT_SCRIPT = """
import asyncio, io, sys
from rustasync import _rustasync as m
sink = io.StringIO()
def emit(lines): sink.write("\\n".join(lines))
async def main():
    await m.run_asyncq(5, 10, seed=1, zero_sleep=True, emit=emit, items_per_producer=2000)
    await asyncio.gather(*(m._rust_yield(i) for i in range(2000)))
    m._rust_sleep(0.001, None)  # still running on tokio at exit
asyncio.run(main())
"""


@pytest.mark.parametrize("attempt", range(5))
def test_interpreter_exit_right_after_rust_completions(attempt):
    """Wakeups still in flight while the interpreter exits must not crash it."""
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-c", EXIT_SCRIPT], capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr.decode()[-2000:]
