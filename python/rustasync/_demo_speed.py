"""The speed half of `python -m rustasync demo`: the tutorial's programs, scaled up.

Each workload runs the same program on stock asyncio and on rustasync (and,
where it applies, on the Rust engine or a peer library), checks every result
before its time counts, and reports the median of a few interleaved rounds.
The full benchmark suite is `python -m rustasync bench`.
"""

from __future__ import annotations

import asyncio
import importlib.util
import io
import itertools as it
import os
import random
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import rustasync

from ._benchmarks.bench_channel import _bulk_janus, _bulk_rustasync, _check_asyncq, _rust_asyncq
from ._benchmarks.bench_queue import batched_pipeline

__all__ = ["Workload", "workloads", "measure"]


@dataclass
class Workload:
    """One program, several implementations of it; the first is the baseline."""

    title: str
    # name -> a function that runs the program once, checks it, and returns
    # its own time in seconds (set-up and checks excluded)
    impls: dict[str, Callable[[], float]]
    times: dict[str, float] = field(default_factory=dict)

    @property
    def baseline(self) -> str:
        return next(iter(self.impls))

    def ratio(self, name: str) -> float:
        """Baseline time / this implementation's time (above 1: faster)."""
        return self.times[self.baseline] / self.times[name]


# -- gather of many sleeps ---------------------------------------------------------------------


def _gather_sleeps(aio: Any, n: int) -> Callable[[], float]:
    async def main() -> float:
        began = time.perf_counter()
        got = await aio.gather(*(aio.sleep(0.01, i) for i in range(n)))
        took = time.perf_counter() - began
        if got != list(range(n)):
            raise AssertionError(f"gather returned {str(got)[:60]}")
        return took

    return lambda: asyncio.run(main())


# -- the tutorial's asyncq.py with zero sleeps -------------------------------------------------


def _asyncq_script(aio: Any, nprod: int, ncon: int, per: int) -> Callable[[], float]:
    """asyncq.py as the tutorial writes it, on `aio`'s sleep, gather and Queue."""

    def once() -> float:
        sink = io.StringIO()
        got = 0

        async def makeitem(size: int = 5) -> str:
            return os.urandom(size).hex()

        async def randsleep(caller: str) -> None:
            i = random.randint(0, 10)
            print(f"{caller} sleeping for {i} seconds.", file=sink)
            await aio.sleep(0)

        async def produce(name: int, q: Any) -> None:
            for _ in it.repeat(None, per):
                await randsleep(caller=f"Producer {name}")
                i = await makeitem()
                t = time.perf_counter()
                await q.put((i, t))
                print(f"Producer {name} added <{i}> to queue.", file=sink)

        async def consume(name: int, q: Any) -> None:
            nonlocal got
            while True:
                await randsleep(caller=f"Consumer {name}")
                i, t = await q.get()
                now = time.perf_counter()
                print(f"Consumer {name} got element <{i}> in {now - t:0.5f} seconds.", file=sink)
                got += 1
                q.task_done()

        async def main() -> None:
            q = aio.Queue()
            producers = [asyncio.create_task(produce(n, q)) for n in range(nprod)]
            consumers = [asyncio.create_task(consume(n, q)) for n in range(ncon)]
            await aio.gather(*producers)
            await q.join()
            for c in consumers:
                c.cancel()

        random.seed(444)
        began = time.perf_counter()
        asyncio.run(main())
        took = time.perf_counter() - began
        if got != nprod * per:
            raise AssertionError(f"{got} items consumed, {nprod * per} produced")
        _check_asyncq(sink.getvalue(), nprod, ncon, per)
        return took

    return once


def _asyncq_engine(nprod: int, ncon: int, per: int) -> Callable[[], float]:
    def once() -> float:
        sink = io.StringIO()
        began = time.perf_counter()
        got = _rust_asyncq(nprod, ncon, per, sink)
        took = time.perf_counter() - began
        if got != nprod * per:
            raise AssertionError(f"{got} items consumed, {nprod * per} produced")
        _check_asyncq(sink.getvalue(), nprod, ncon, per)
        return took

    return once


# -- a producer and a consumer over a queue ----------------------------------------------------


def _pipeline(make: Callable[[int], Any], n: int, batched: bool) -> Callable[[], float]:
    def once() -> float:
        took, got = asyncio.run(batched_pipeline(make, n, batched))
        if got != n:
            raise AssertionError(f"{got} items got, {n} put")
        return float(took)

    return once


# -- a thread feeding a loop -------------------------------------------------------------------


def _bulk_stock(n: int) -> tuple[int, int]:
    """The stock way: the thread hands each item to the loop with call_soon_threadsafe."""

    async def main() -> tuple[int, int]:
        loop = asyncio.get_running_loop()
        q: asyncio.Queue[int | None] = asyncio.Queue()

        def produce() -> None:
            put = q.put_nowait
            call = loop.call_soon_threadsafe
            for i in range(n):
                call(put, i)
            call(put, None)

        t = threading.Thread(target=produce)
        t.start()
        cnt = tot = 0
        get = q.get
        while (x := await get()) is not None:
            cnt += 1
            tot += x
        await asyncio.to_thread(t.join)
        return cnt, tot

    return asyncio.run(main())


def _timed(fn: Callable[[], tuple[int, int]], n: int) -> Callable[[], float]:
    def once() -> float:
        began = time.perf_counter()
        got = fn()
        took = time.perf_counter() - began
        if got != (n, n * (n - 1) // 2):
            raise AssertionError(f"received {got}, sent {(n, n * (n - 1) // 2)}")
        return took

    return once


def _optional(name: str) -> ModuleType | None:
    if importlib.util.find_spec(name) is None:
        return None
    return importlib.import_module(name)


# -- the list ----------------------------------------------------------------------------------


def workloads(scale: int = 1) -> list[Workload]:
    """The demo's workloads, `scale` times smaller than the full ones."""
    n_sleeps = 100_000 // scale
    nprod, ncon, per = 5, 10, 20_000 // scale
    n_items = 200_000 // scale
    n_queued = 256 * (2_000 // scale)
    maxsize = 10_000
    feed: dict[str, Callable[[], float]] = {
        "asyncio.Queue + call_soon_threadsafe": _timed(lambda: _bulk_stock(n_items), n_items)
    }
    janus = _optional("janus")
    if janus is not None:
        feed["janus"] = _timed(lambda: _bulk_janus(n_items, maxsize, janus), n_items)
    feed["rustasync Channel, send_blocking"] = _timed(
        lambda: _bulk_rustasync(n_items, maxsize, False), n_items
    )
    feed["rustasync Channel, send_many_blocking"] = _timed(
        lambda: _bulk_rustasync(n_items, maxsize, True), n_items
    )
    return [
        Workload(
            f"gather of {n_sleeps:,} sleep(0.01)",
            {
                "asyncio.gather + asyncio.sleep": _gather_sleeps(asyncio, n_sleeps),
                "rustasync.gather + rustasync.sleep": _gather_sleeps(rustasync, n_sleeps),
            },
        ),
        Workload(
            f"asyncq.py, zero sleeps, {nprod * per:,} items",
            {
                "asyncio (the tutorial's script)": _asyncq_script(asyncio, nprod, ncon, per),
                "rustasync (the same script)": _asyncq_script(rustasync, nprod, ncon, per),
                "Rust engine (tokio tasks)": _asyncq_engine(nprod, ncon, per),
            },
        ),
        Workload(
            f"one producer, one consumer, {n_queued:,} items",
            {
                "asyncio.Queue, put + get": _pipeline(asyncio.Queue, n_queued, False),
                "rustasync.Queue, put + get": _pipeline(rustasync.Queue, n_queued, False),
                "rustasync.Queue, put_many + get_many": _pipeline(rustasync.Queue, n_queued, True),
            },
        ),
        Workload(f"a thread feeding a loop, {n_items:,} items", feed),
    ]


def measure(workload: Workload, rounds: int) -> Iterator[str]:
    """Run every implementation `rounds` times, interleaved; yields each one's name as it starts.

    Sets `workload.times` to the medians.
    """
    samples: dict[str, list[float]] = {name: [] for name in workload.impls}
    for _ in range(rounds):
        for name, once in workload.impls.items():
            yield name
            samples[name].append(once())
    workload.times = {name: statistics.median(values) for name, values in samples.items()}
