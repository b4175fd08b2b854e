"""Loops that go away while rustasync work is pending, and Ctrl-C.

Each scenario is a small program run in a fresh process twice: once with
stock asyncio's primitives and once with rustasync's, on the stock loop and
on uvloop. rustasync must exit the same way, and print nothing stock asyncio
would not also print: no traceback, no "Event loop is closed", no Rust
panic, and no more "Task was destroyed but it is pending!" lines than stock
(fewer is fine: a rustasync sleep inside gather is not wrapped in a Task).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import LOOP_KINDS

PRELUDE = textwrap.dedent(
    """
    import asyncio, gc, sys, threading
    import rustasync
    from rustasync import _rustasync as ext

    IMPL, LOOP = sys.argv[1], sys.argv[2]
    RUST = IMPL == "rustasync"
    if RUST:
        sleep, gather, Queue = rustasync.sleep, rustasync.gather, rustasync.Queue
    else:
        sleep, gather, Queue = asyncio.sleep, asyncio.gather, asyncio.Queue

    def new_loop():
        if LOOP == "asyncio":
            return asyncio.new_event_loop()
        return __import__(LOOP).new_event_loop()

    async def pending_work():
        q, full, unfinished = Queue(), Queue(1), Queue()
        full.put_nowait(0)
        unfinished.put_nowait(0)
        work = [
            sleep(100),
            sleep(float("inf")),
            gather(sleep(100), sleep(0.5, "x")),
            gather(sleep(100), asyncio.sleep(100), return_exceptions=True),
            q.get(),
            full.put(1),
            unfinished.join(),
        ]
        if RUST:
            # Channel waiters and a Rust future on tokio; stock gets as many
            # stock waiters, so both sides have the same number of tasks.
            ch, ch_full = rustasync.Channel(), rustasync.Channel(1)
            ch_full.send_nowait(0)
            work += [ch.recv(), ch_full.send(1), ch.recv_many(3), ext._rust_sleep(100, None)]
        else:
            work += [Queue().get() for _ in range(4)]
        tasks = [asyncio.ensure_future(w) for w in work]
        await sleep(0.01)
        return tasks
    """
)

SCENARIOS = {
    "asyncio.run ends": """
        async def main():
            global tasks
            tasks = await pending_work()
        asyncio.run(main(), loop_factory=new_loop) if sys.version_info >= (3, 12) else None
        if sys.version_info < (3, 12):
            with asyncio.Runner(loop_factory=new_loop) as r:
                r.run(main())
        gc.collect()
        asyncio.run(sleep(0.001))
        print("done")
    """,
    "loop closed with work pending": """
        loop = new_loop()
        tasks = loop.run_until_complete(pending_work())
        loop.close()
        del tasks
        gc.collect()
        asyncio.run(sleep(0.001))  # the thread's next loop
        gc.collect()
        print("done")
    """,
    "thread exits with its loop": """
        def in_thread():
            loop = new_loop()
            loop.run_until_complete(pending_work())
            loop.close()
        t = threading.Thread(target=in_thread)
        t.start()
        t.join()
        gc.collect()
        asyncio.run(sleep(0.001))
        gc.collect()
        print("done")
    """,
    "thread exits, loop left open": """
        def in_thread():
            loop = new_loop()
            loop.run_until_complete(pending_work())
        t = threading.Thread(target=in_thread)
        t.start()
        t.join()
        gc.collect()
        print("done")
    """,
}

FORBIDDEN = re.compile(r"Traceback|Event loop is closed|panicked|RustPanic|Exception ignored|Fatal")
DESTROYED = "Task was destroyed but it is pending!"


def run_script(body: str, impl: str, loop_kind: str, timeout: float = 60):
    script = PRELUDE + textwrap.dedent(body)
    return subprocess.run(
        [sys.executable, "-X", "dev", "-c", script, impl, loop_kind],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONASYNCIODEBUG": ""},
    )


@pytest.mark.parametrize("loop_kind", LOOP_KINDS)
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_nothing_printed_that_stock_would_not_print(scenario, loop_kind) -> None:
    stock = run_script(SCENARIOS[scenario], "asyncio", loop_kind)
    rust = run_script(SCENARIOS[scenario], "rustasync", loop_kind)
    assert stock.returncode == 0, stock.stderr
    assert rust.returncode == 0, rust.stderr
    assert rust.stdout == stock.stdout == "done\n"
    assert rust.stderr.count(DESTROYED) <= stock.stderr.count(DESTROYED), rust.stderr
    rust_bad = set(FORBIDDEN.findall(rust.stderr))
    stock_bad = set(FORBIDDEN.findall(stock.stderr))
    assert rust_bad <= stock_bad, rust.stderr


SIGINT_MAIN = {
    "gather, sleep, queue get": """
        async def main():
            q = Queue()
            print("ready", flush=True)
            await gather(sleep(100), q.get(), sleep(float("inf")))
    """,
    "queue put, join": """
        async def main():
            q = Queue(1)
            q.put_nowait(0)
            asyncio.ensure_future(q.join())
            print("ready", flush=True)
            await q.put(1)
    """,
    "channel recv (rustasync) or queue get (stock)": """
        async def main():
            w = rustasync.Channel().recv() if RUST else Queue().get()
            print("ready", flush=True)
            await w
    """,
}


def interrupted(body: str, impl: str, loop_kind: str):
    script = PRELUDE + textwrap.dedent(body) + "\nasyncio.run(main(), debug=False)\n"
    if loop_kind != "asyncio":
        script = script.replace(
            "asyncio.run(main(), debug=False)",
            f"import {loop_kind}\n"
            f"with asyncio.Runner(loop_factory={loop_kind}.new_event_loop) as r:\n"
            "    r.run(main())",
        )
    p = subprocess.Popen(
        [sys.executable, "-c", script, impl, loop_kind],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert p.stdout.readline() == "ready\n"
    time.sleep(0.2)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=30)
    return p.returncode, err


@pytest.mark.parametrize("loop_kind", LOOP_KINDS)
@pytest.mark.parametrize("what", list(SIGINT_MAIN))
def test_ctrl_c_exits_as_with_stock_asyncio(what, loop_kind) -> None:
    stock_code, stock_err = interrupted(SIGINT_MAIN[what], "asyncio", loop_kind)
    rust_code, rust_err = interrupted(SIGINT_MAIN[what], "rustasync", loop_kind)
    assert rust_code == stock_code
    assert rust_err.strip().splitlines()[-1] == stock_err.strip().splitlines()[-1]
    assert "KeyboardInterrupt" in rust_err
    assert "panicked" not in rust_err and "RustPanic" not in rust_err


def test_ctrl_c_during_blocking_channel_call() -> None:
    """recv_blocking on the main thread checks for signals while it waits."""
    script = PRELUDE + textwrap.dedent(
        """
        ch = rustasync.Channel()
        print("ready", flush=True)
        ch.recv_blocking()
        """
    )
    p = subprocess.Popen(
        [sys.executable, "-c", script, "rustasync", "asyncio"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert p.stdout.readline() == "ready\n"
    time.sleep(0.2)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=30)
    assert p.returncode in (1, -signal.SIGINT)
    assert err.strip().splitlines()[-1] == "KeyboardInterrupt"
