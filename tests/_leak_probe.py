"""Resident-memory growth per operation kind, measured in a fresh process.

    python tests/_leak_probe.py LOOP SCALE

runs each operation kind ``SCALE * weight`` times after a warm-up and prints
one JSON object: kind -> {"ops", "rss_growth", "bytes_per_op",
"objects_growth"}. Resident memory is read from /proc/self/statm.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import sys

from _loops import loop_factory

import rustasync

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


async def sleep_zero(n: int) -> None:
    for _ in range(n):
        await rustasync.sleep(0)


async def sleep_cancelled(n: int) -> None:
    for _ in range(n):
        t = asyncio.ensure_future(rustasync.sleep(10, n))
        await rustasync.sleep(0)
        t.cancel()
        try:
            await t
        except asyncio.CancelledError:
            pass


async def sleep_timer(n: int) -> None:
    # Sleeps that really go through the timer heap, 100 at a time.
    for _ in range(n // 100):
        await rustasync.gather(*(rustasync.sleep(1e-6, i) for i in range(100)))


async def queue_put_get(n: int) -> None:
    q = rustasync.Queue(8)
    item = object()
    for _ in range(n):
        await q.put(item)
        await q.get()
        q.task_done()


async def queue_get_cancelled(n: int) -> None:
    q = rustasync.Queue()
    for _ in range(n):
        t = asyncio.ensure_future(q.get())
        await rustasync.sleep(0)
        t.cancel()
        try:
            await t
        except asyncio.CancelledError:
            pass


async def _ok(i: int) -> int:
    return i


async def _fail() -> None:
    raise KeyError("x")


async def gather_failing(n: int, return_exceptions: bool) -> None:
    for _ in range(n):
        try:
            await rustasync.gather(
                *(_ok(i) for i in range(9)), _fail(), return_exceptions=return_exceptions
            )
        except KeyError:
            pass
    # The children left running when the gather raised finish here.
    await rustasync.sleep(0)


async def gather_returning(n: int) -> None:
    await gather_failing(n, True)


async def gather_raising(n: int) -> None:
    await gather_failing(n, False)


async def channel_across_threads(n: int) -> None:
    """A plain thread sends with send_blocking; the loop receives."""
    import threading

    ch = rustasync.Channel(64)
    item = object()

    def produce() -> None:
        for _ in range(n):
            ch.send_blocking(item)

    t = threading.Thread(target=produce)
    t.start()
    for _ in range(n):
        await ch.recv()
    t.join()


async def channel_recv_cancelled(n: int) -> None:
    ch = rustasync.Channel()
    for _ in range(n):
        t = asyncio.ensure_future(ch.recv())
        await rustasync.sleep(0)
        t.cancel()
        try:
            await t
        except asyncio.CancelledError:
            pass


_KEPT: list[bytes] = []


async def control_leak(n: int) -> None:
    """Keeps ~100 bytes per operation: the measurement must notice."""
    for i in range(n):
        _KEPT.append(i.to_bytes(100, "little"))
        await rustasync.sleep(0)


# kind -> (function, weight: operations per SCALE unit)
KINDS = {
    "sleep(0)": (sleep_zero, 1.0),
    "sleep(>0) then cancel": (sleep_cancelled, 1.0),
    "sleep(>0) through the timer heap": (sleep_timer, 1.0),
    "queue put + get": (queue_put_get, 1.0),
    "queue get cancelled": (queue_get_cancelled, 1.0),
    "gather of 10, one failing, return_exceptions=True": (gather_returning, 0.5),
    "gather of 10, one failing, return_exceptions=False": (gather_raising, 0.5),
    "channel send (thread) / recv (loop)": (channel_across_threads, 0.3),
    "channel recv cancelled": (channel_recv_cancelled, 1.0),
    "control: 100 bytes kept per op": (control_leak, 1.0),
}


def main(loop_kind: str, scale: int) -> dict[str, dict[str, float]]:
    factory = loop_factory(loop_kind)
    out = {}
    with asyncio.Runner(loop_factory=factory) as runner:
        for name, (fn, weight) in KINDS.items():
            n = int(scale * weight)
            runner.run(fn(max(n // 5, 100)))  # warm-up: allocator, caches, freelists
            gc.collect()
            objects0, rss0 = len(gc.get_objects()), rss()
            runner.run(fn(n))
            gc.collect()
            growth = rss() - rss0
            out[name] = {
                "ops": n,
                "rss_growth": growth,
                "bytes_per_op": growth / n,
                "objects_growth": len(gc.get_objects()) - objects0,
            }
    return out


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], int(sys.argv[2]))))
