"""Channel, Rust-engine and bridge benchmarks.

    python benchmarks/bench_channel.py [--reps 5] [--quick] [--only a,b,...]

Workloads (every result is validated before its time counts):
  a  asyncq shape, zero sleeps, 5 producers x 20,000 items, 10 consumers:
     the Rust engine vs the tutorial's script on stock asyncio, both
     writing into an io.StringIO. The engine runs twice: with a yield per
     sleep (the tutorial's sleep(0)) and with yield_every=64 (bursts).
  b  one Python thread sends 1,000,000 ints to one asyncio consumer:
     Channel (recv_many) vs janus, culsans, aiologic.
  c  ping-pong between a thread and an asyncio task, round trips/s.
  d  4 producer threads -> 4 consumer tasks on 2 loops, 1,000,000 items.
  e  100,000 awaits of Rust futures (all created first, so all are in
     flight at once) vs pyo3_async_runtimes.tokio.future_into_py.

Repetitions are interleaved (rep 1 of every variant, then rep 2, ...);
medians are reported. `run(args)` returns the rows as dicts.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import io
import itertools as it
import os
import random
import re
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable

import rustasync
from rustasync import Channel, ChannelClosed
from rustasync import _rustasync as _ra

# ---------------------------------------------------------------- (a) asyncq


def _python_asyncq(nprod: int, ncon: int, per: int, sink) -> int:
    """The tutorial's asyncq.py, with sleeps of 0 s and `per` items each."""

    async def makeitem(size: int = 5) -> str:
        return os.urandom(size).hex()

    async def randsleep(caller=None) -> None:
        i = random.randint(0, 10)
        if caller:
            print(f"{caller} sleeping for {i} seconds.", file=sink)
        await asyncio.sleep(0)

    async def produce(name: int, q: asyncio.Queue) -> None:
        for _ in it.repeat(None, per):
            await randsleep(caller=f"Producer {name}")
            i = await makeitem()
            t = time.perf_counter()
            await q.put((i, t))
            print(f"Producer {name} added <{i}> to queue.", file=sink)

    got = 0

    async def consume(name: int, q: asyncio.Queue) -> None:
        nonlocal got
        while True:
            await randsleep(caller=f"Consumer {name}")
            i, t = await q.get()
            now = time.perf_counter()
            print(f"Consumer {name} got element <{i}> in {now - t:0.5f} seconds.", file=sink)
            got += 1
            q.task_done()

    async def main() -> None:
        q: asyncio.Queue = asyncio.Queue()
        producers = [asyncio.create_task(produce(n, q)) for n in range(nprod)]
        consumers = [asyncio.create_task(consume(n, q)) for n in range(ncon)]
        await asyncio.gather(*producers)
        await q.join()
        for c in consumers:
            c.cancel()

    random.seed(444)
    asyncio.run(main())
    return got


def _rust_asyncq(nprod: int, ncon: int, per: int, sink, yield_every: int = 1) -> int:
    async def main() -> dict:
        return await _ra.run_asyncq(
            nprod,
            ncon,
            seed=444,
            zero_sleep=True,
            emit=sink.write,
            as_text=True,
            items_per_producer=per,
            yield_every=yield_every,
        )

    r = asyncio.run(main())
    assert r["produced"] == nprod * per, r
    return r["consumed"]


_ASYNCQ_ITEM = re.compile(r" (added|got element) <([0-9a-f]{10})>")


def _check_asyncq(text: str, nprod: int, ncon: int, per: int) -> None:
    """Every item produced once and consumed once; the tutorial's line counts."""
    total = nprod * per
    added: Counter[str] = Counter()
    got: Counter[str] = Counter()
    for kind, item in _ASYNCQ_ITEM.findall(text):
        (added if kind == "added" else got)[item] += 1
    assert added.total() == got.total() == total, (added.total(), got.total())
    assert added == got
    # A sleep before each item made and each item taken, plus each
    # consumer's last sleep before it found the queue done.
    assert text.count(" sleeping for ") == 2 * total + ncon
    assert text.count("\n") == 4 * total + ncon


def bench_asyncq(reps: int, quick: bool) -> list[dict]:
    nprod, ncon, per = 5, 10, (2_000 if quick else 20_000)
    total = nprod * per
    burst = 64
    variants: dict[str, Callable[[], float]] = {}
    for name, fn in (
        ("python asyncio.Queue script", _python_asyncq),
        ("rust engine (yield per sleep)", _rust_asyncq),
        (
            f"rust engine (yield every {burst} sleeps)",
            lambda *a: _rust_asyncq(*a, yield_every=burst),
        ),
    ):

        def once(fn=fn) -> float:
            sink = io.StringIO()
            t0 = time.perf_counter()
            got = fn(nprod, ncon, per, sink)
            dt = time.perf_counter() - t0
            assert got == total, (got, total)
            _check_asyncq(sink.getvalue(), nprod, ncon, per)
            return dt

        variants[name] = once
    med = _interleave(variants, reps)
    base = med["python asyncio.Queue script"]
    return [
        _row("a", f"asyncq 5p x {per}, 10c, zero sleeps", k, v, total / v, "items/s", base / v, 50)
        for k, v in med.items()
    ]


# ------------------------------------------------- (b) thread -> asyncio bulk


def _bulk_rustasync(n: int, maxsize: int, many: bool) -> tuple[int, int]:
    ch: Channel[int] = Channel(maxsize)

    def produce() -> None:
        if many:
            for start in range(0, n, 1024):
                ch.send_many_blocking(range(start, min(n, start + 1024)))
        else:
            send = ch.send_blocking
            for i in range(n):
                send(i)
        ch.close()

    async def consume() -> tuple[int, int]:
        cnt = tot = 0
        recv_many = ch.recv_many
        while True:
            try:
                batch = await recv_many(4096)
            except ChannelClosed:
                return cnt, tot
            cnt += len(batch)
            tot += sum(batch)

    t = threading.Thread(target=produce)
    t.start()
    r = asyncio.run(consume())
    t.join()
    return r


def _bulk_janus(n: int, maxsize: int, mod) -> tuple[int, int]:
    async def main() -> tuple[int, int]:
        q = mod.Queue(maxsize)

        def produce() -> None:
            put = q.sync_q.put
            for i in range(n):
                put(i)
            put(None)

        t = threading.Thread(target=produce)
        t.start()
        cnt = tot = 0
        get = q.async_q.get
        while (x := await get()) is not None:
            cnt += 1
            tot += x
        await asyncio.to_thread(t.join)
        return cnt, tot

    return asyncio.run(main())


def _bulk_aiologic(n: int, maxsize: int) -> tuple[int, int]:
    import aiologic

    q = aiologic.Queue(maxsize)

    def produce() -> None:
        put = q.green_put
        for i in range(n):
            put(i)
        put(None)

    async def consume() -> tuple[int, int]:
        cnt = tot = 0
        get = q.async_get
        while (x := await get()) is not None:
            cnt += 1
            tot += x
        return cnt, tot

    t = threading.Thread(target=produce)
    t.start()
    r = asyncio.run(consume())
    t.join()
    return r


def _peers() -> dict[str, object]:
    """The peer libraries that are installed (pip install rustasync[bench]), by name."""
    found = {}
    for name in ("janus", "culsans", "aiologic"):
        try:
            found[name] = importlib.import_module(name)
        except ImportError:
            pass
    return found


def bench_bulk(reps: int, quick: bool) -> list[dict]:
    peers = _peers()
    n = 100_000 if quick else 1_000_000
    maxsize = 10_000
    expect = (n, n * (n - 1) // 2)
    # aiologic needs ~60 us/item here (GIL-bound polling), so it gets a
    # tenth of the items; rates (items/s) are compared, not times.
    n_aio = n // 10
    expect_aio = (n_aio, n_aio * (n_aio - 1) // 2)
    impls = {
        "rustasync send_blocking + recv_many": (n, lambda: _bulk_rustasync(n, maxsize, False)),
        "rustasync send_many_blocking + recv_many": (n, lambda: _bulk_rustasync(n, maxsize, True)),
    }
    for name in ("janus", "culsans"):
        if name in peers:
            impls[name] = (n, lambda mod=peers[name]: _bulk_janus(n, maxsize, mod))
    if "aiologic" in peers:
        impls[f"aiologic ({n_aio:,} items)"] = (n_aio, lambda: _bulk_aiologic(n_aio, maxsize))
    med = _interleave(
        {k: _checked(f, expect if cnt == n else expect_aio) for k, (cnt, f) in impls.items()}, reps
    )
    rates = {k: impls[k][0] / v for k, v in med.items()}
    best_peer = max((r for k, r in rates.items() if not k.startswith("rustasync")), default=None)
    return [
        _row(
            "b",
            f"thread -> asyncio, {n:,} items, maxsize {maxsize}",
            k,
            v,
            rates[k],
            "items/s",
            None if best_peer is None else rates[k] / best_peer,
            10 if k.startswith("rustasync") else None,
        )
        for k, v in med.items()
    ]


# ------------------------------------------------------------ (c) ping-pong


def _pp_rustasync(n: int) -> tuple[int, int]:
    a: Channel[int] = Channel(1)
    b: Channel[int] = Channel(1)

    def thread() -> None:
        for i in range(n):
            a.send_blocking(i)
            assert b.recv_blocking() == i + 1
        a.close()

    async def task() -> tuple[int, int]:
        cnt = tot = 0
        async for x in a:
            await b.send(x + 1)
            cnt += 1
            tot += x
        return cnt, tot

    t = threading.Thread(target=thread)
    t.start()
    r = asyncio.run(task())
    t.join()
    return r


def _pp_janus(n: int, mod) -> tuple[int, int]:
    async def main() -> tuple[int, int]:
        a, b = mod.Queue(1), mod.Queue(1)

        def thread() -> None:
            for i in range(n):
                a.sync_q.put(i)
                assert b.sync_q.get() == i + 1
            a.sync_q.put(None)

        t = threading.Thread(target=thread)
        t.start()
        cnt = tot = 0
        while (x := await a.async_q.get()) is not None:
            await b.async_q.put(x + 1)
            cnt += 1
            tot += x
        await asyncio.to_thread(t.join)
        return cnt, tot

    return asyncio.run(main())


def _pp_aiologic(n: int) -> tuple[int, int]:
    import aiologic

    a, b = aiologic.Queue(1), aiologic.Queue(1)

    def thread() -> None:
        for i in range(n):
            a.green_put(i)
            assert b.green_get() == i + 1
        a.green_put(None)

    async def task() -> tuple[int, int]:
        cnt = tot = 0
        while (x := await a.async_get()) is not None:
            await b.async_put(x + 1)
            cnt += 1
            tot += x
        return cnt, tot

    t = threading.Thread(target=thread)
    t.start()
    r = asyncio.run(task())
    t.join()
    return r


def bench_pingpong(reps: int, quick: bool) -> list[dict]:
    peers = _peers()
    n = 2_000 if quick else 20_000
    expect = (n, n * (n - 1) // 2)
    impls: dict[str, Callable[[], tuple[int, int]]] = {"rustasync": lambda: _pp_rustasync(n)}
    for name in ("janus", "culsans"):
        if name in peers:
            impls[name] = lambda mod=peers[name]: _pp_janus(n, mod)
    if "aiologic" in peers:
        impls["aiologic"] = lambda: _pp_aiologic(n)
    med = _interleave({k: _checked(f, expect) for k, f in impls.items()}, reps)
    best_peer = min((v for k, v in med.items() if k != "rustasync"), default=None)
    return [
        _row(
            "c",
            f"ping-pong thread <-> task, {n:,} round trips",
            k,
            v,
            n / v,
            "round trips/s",
            None if best_peer is None else best_peer / v,
            2 if k == "rustasync" else None,
        )
        for k, v in med.items()
    ]


# ------------------------------------------------- (d) threads x loops MPMC


def _mpmc(n: int, nprod: int = 4, nloops: int = 2, per_loop: int = 2) -> tuple[int, int]:
    ch: Channel[int] = Channel(4096)
    per = n // nprod
    results: list[list[int]] = []
    lock = threading.Lock()

    def producer(p: int) -> None:
        for start in range(p * per, (p + 1) * per, 512):
            ch.send_many_blocking(range(start, min((p + 1) * per, start + 512)))

    def loop_thread() -> None:
        async def consumer() -> list[int]:
            got: list[int] = []
            while True:
                try:
                    got += await ch.recv_many(1024)
                except ChannelClosed:
                    return got

        async def main() -> list[list[int]]:
            return await asyncio.gather(*(consumer() for _ in range(per_loop)))

        r = asyncio.run(main())
        with lock:
            results.extend(r)

    loops = [threading.Thread(target=loop_thread) for _ in range(nloops)]
    prods = [threading.Thread(target=producer, args=(p,)) for p in range(nprod)]
    t0 = time.perf_counter()
    for t in loops + prods:
        t.start()
    for t in prods:
        t.join()
    ch.close()
    for t in loops:
        t.join()
    dt = time.perf_counter() - t0
    allv = sorted(itertools_chain(results))
    assert len(allv) == per * nprod, "lost or duplicated items"
    assert allv == list(range(per * nprod)), "lost or duplicated items"
    s = ch.stats()
    assert s["sent"] == s["received"] == per * nprod, s
    _mpmc.last = dt  # type: ignore[attr-defined]
    return len(allv), sum(allv)


def itertools_chain(lists: list[list[int]]):
    return it.chain.from_iterable(lists)


def bench_mpmc(reps: int, quick: bool) -> list[dict]:
    n = 100_000 if quick else 1_000_000
    expect = (n, n * (n - 1) // 2)
    med = _interleave({"rustasync": _checked(lambda: _mpmc(n), expect)}, reps)
    v = med["rustasync"]
    return [
        _row(
            "d",
            f"4 threads -> 4 tasks on 2 loops, {n:,} items (no loss/dup checked)",
            "rustasync",
            v,
            n / v,
            "items/s",
            None,
            None,
        )
    ]


# ---------------------------------------------------------- (e) bridge cost


def _awaits(make: Callable[[int], object], n: int) -> tuple[int, int]:
    async def main() -> tuple[int, int]:
        futs = [make(i) for i in range(n)]
        tot = 0
        for f in futs:
            tot += await f  # type: ignore[misc]
        return n, tot

    return asyncio.run(main())


def bench_bridge(reps: int, quick: bool) -> list[dict]:
    n = 10_000 if quick else 100_000
    expect = (n, n * (n - 1) // 2)
    impls = {
        "pyo3_async_runtimes future_into_py (ready)": lambda: _awaits(
            _ra._pyo3_async_runtimes_ready, n
        ),
        "rustasync bridge (ready)": lambda: _awaits(_ra._rust_ready, n),
        "rustasync bridge (one tokio round trip)": lambda: _awaits(_ra._rust_yield, n),
    }
    med = _interleave({k: _checked(f, expect) for k, f in impls.items()}, reps)
    base = med["pyo3_async_runtimes future_into_py (ready)"]
    return [
        _row(
            "e",
            f"{n:,} concurrent awaits of Rust futures",
            k,
            v,
            n / v,
            "awaits/s",
            base / v,
            2 if k.startswith("rustasync") else None,
        )
        for k, v in med.items()
    ]


# ------------------------------------------------------------------ harness


def _checked(fn: Callable[[], tuple[int, int]], expect: tuple[int, int]) -> Callable[[], float]:
    def once() -> float:
        t0 = time.perf_counter()
        r = fn()
        dt = time.perf_counter() - t0
        assert r == expect, (r, expect)
        return dt

    return once


def _interleave(variants: dict[str, Callable[[], float]], reps: int) -> dict[str, float]:
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(reps):
        for k, f in variants.items():
            gc.collect()
            times[k].append(f())
    return {k: statistics.median(v) for k, v in times.items()}


def _row(wid, workload, impl, seconds, rate, unit, speedup, target) -> dict:
    return {
        "id": wid,
        "workload": workload,
        "impl": impl,
        "median_s": seconds,
        "rate": rate,
        "unit": unit,
        "speedup": speedup,
        "target": target,
    }


WORKLOADS = {
    "a": bench_asyncq,
    "b": bench_bulk,
    "c": bench_pingpong,
    "d": bench_mpmc,
    "e": bench_bridge,
}


def run(args: argparse.Namespace | None = None) -> list[dict]:
    """Run the selected workloads; returns one dict per (workload, impl)."""
    args = args or parse_args([])
    rows: list[dict] = []
    for key in args.only.split(","):
        rows += WORKLOADS[key.strip()](args.reps, args.quick)
    return rows


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="10x smaller workloads")
    p.add_argument("--only", default="a,b,c,d,e", help="comma-separated workload ids")
    p.add_argument("--uvloop", action="store_true", help="run every loop on uvloop")
    p.add_argument("--rloop", action="store_true", help="run every loop on rloop")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    kind = "uvloop" if args.uvloop else "rloop" if args.rloop else "asyncio"
    if kind != "asyncio":
        asyncio.set_event_loop_policy(importlib.import_module(kind).EventLoopPolicy())
    print(
        f"rustasync {rustasync.__version__}, Python {sys.version.split()[0]}, "
        f"{kind} loop, {args.reps} interleaved reps, medians"
    )
    for r in run(args):
        sp = "" if r["speedup"] is None else f"{r['speedup']:8.2f}x"
        tg = "" if r["target"] is None else f" (target >= {r['target']}x)"
        print(
            f"[{r['id']}] {r['workload']:<55} {r['impl']:<42} {r['median_s']:9.4f} s "
            f"{r['rate']:>14,.0f} {r['unit']:<14} {sp}{tg}"
        )


if __name__ == "__main__":
    main()
