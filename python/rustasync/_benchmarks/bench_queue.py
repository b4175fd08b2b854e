"""Queue benchmarks: rustasync's queues against asyncio's and peers'.

    python benchmarks/bench_queue.py [--quick] [--loop uvloop] [--json] [--reps N]

Every workload runs for every implementation inside one process; the
repetitions are interleaved (workload by workload, implementations in a
shuffled order each round) and the median is reported. The ratio is stock
asyncio's median time divided by the implementation's, so 3.0 means three
times faster. Each workload is first run small and its result checked (item
counts, sums, order) before anything is timed; timed runs check their
counts too.

Peers (their asyncio-side queues) are included when installed: janus,
culsans, aiologic. aiologic's queue has no task_done/join or non-blocking
calls, so it only appears in the producer/consumer rows.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import statistics
import sys
import time
import types

import rustasync

# --- implementations --------------------------------------------------------------


def _asyncio(maxsize):
    return asyncio.Queue(maxsize)


def _rustasync(maxsize):
    return rustasync.Queue(maxsize)


def _served(maxsize):
    # What `asyncio.Queue(maxsize)` makes under rustasync.install().
    from rustasync._install import served_queue_class

    return served_queue_class(rustasync.Queue, asyncio.queues.Queue)(maxsize)


def _janus(maxsize):
    import janus

    return janus.Queue(maxsize).async_q


def _culsans(maxsize):
    import culsans

    return culsans.Queue(maxsize).async_q


def _aiologic(maxsize):
    import aiologic

    q = aiologic.Queue(maxsize if maxsize > 0 else None)
    return types.SimpleNamespace(put=q.async_put, get=q.async_get, full_api=False)


def implementations() -> dict:
    impls = {"asyncio": _asyncio, "rustasync": _rustasync, "install()": _served}
    for name, fn in (("janus", _janus), ("culsans", _culsans), ("aiologic", _aiologic)):
        try:
            __import__(name)
        except ImportError:
            continue
        impls[name] = fn
    return impls


def full_api(q) -> bool:
    return getattr(q, "full_api", True)


# --- workloads ----------------------------------------------------------------------
# Each returns (seconds, check) where check is compared with the expected value.


async def one_to_one(make, n, maxsize):
    q = make(maxsize)

    async def producer():
        put = q.put
        for i in range(n):
            await put(i)

    async def consumer():
        get = q.get
        s = 0
        for _ in range(n):
            s += await get()
        return s

    t0 = time.perf_counter()
    _, total = await asyncio.gather(producer(), consumer())
    return time.perf_counter() - t0, total


async def asyncq(make, nprod, per, ncons, pregen=False):
    """The shape of the asyncio tutorial's asyncq.py, with no sleeps. With
    `pregen` the items are made before timing, which leaves the queue's
    share of the work (os.urandom(5).hex() alone is a syscall per item)."""
    q = make(0)
    if not full_api(q):
        return None
    seen = [0]
    made = [[os.urandom(5).hex() for _ in range(per)] for _ in range(nprod)] if pregen else None

    async def produce(i):
        put = q.put
        if made is not None:
            for item in made[i]:
                await put(item)
            return
        for _ in range(per):
            await put(os.urandom(5).hex())

    async def consume():
        get, done = q.get, q.task_done
        while True:
            item = await get()
            seen[0] += len(item) == 10
            done()

    t0 = time.perf_counter()
    consumers = [asyncio.create_task(consume()) for _ in range(ncons)]
    await asyncio.gather(*(produce(i) for i in range(nprod)))
    await q.join()
    for c in consumers:
        c.cancel()
    await asyncio.gather(*consumers, return_exceptions=True)
    return time.perf_counter() - t0, seen[0]


async def drain(make, n, batched):
    """A consumer draining `n` queued items: rustasync with get_many(256),
    every other implementation one `await get()` at a time. Filling the
    queue is not timed."""
    q = make(0)
    if not full_api(q):
        return None
    for i in range(n):
        q.put_nowait(i)
    t0 = time.perf_counter()
    got = 0
    if batched:
        get_many, done = q.get_many, q.task_done
        while got < n:
            k = len(await get_many(256))
            got += k
            done(k)
    else:
        get, done = q.get, q.task_done
        while got < n:
            await get()
            got += 1
            done()
    return time.perf_counter() - t0, got


async def batched_pipeline(make, n, batched):
    """End to end: a producer and a consumer; rustasync uses put_many and
    get_many in chunks of 256, the others put/get one item at a time."""
    q = make(0)
    if not full_api(q):
        return None

    async def producer():
        if batched:
            chunk = list(range(256))
            for _ in range(n // 256):
                await q.put_many(chunk)
        else:
            put = q.put
            for _ in range(n // 256):
                for i in range(256):
                    await put(i)

    async def consumer():
        got = 0
        if batched:
            while got < n:
                got += len(await q.get_many(256))
        else:
            get = q.get
            while got < n:
                await get()
                got += 1
        return got

    t0 = time.perf_counter()
    _, got = await asyncio.gather(producer(), consumer())
    return time.perf_counter() - t0, got


async def nowait_pairs(make, n):
    q = make(0)
    if not full_api(q):
        return None
    put, get = q.put_nowait, q.get_nowait
    t0 = time.perf_counter()
    s = 0
    for i in range(n):
        put(i)
        s += get()
    return time.perf_counter() - t0, s


def workloads(quick: bool) -> list[dict]:
    k = 10 if quick else 1
    n1 = 200_000 // k
    nd = 1_000_000 // k
    nn = 300_000 // k
    nb = (1_000_000 // k) // 256 * 256
    return [
        dict(
            name="1p1c maxsize=0",
            items=n1,
            target=3.0,
            fn=lambda m, b: one_to_one(m, n1, 0),
            want=n1 * (n1 - 1) // 2,
        ),
        dict(
            name="1p1c maxsize=100",
            items=n1,
            target=2.5,
            fn=lambda m, b: one_to_one(m, n1, 100),
            want=n1 * (n1 - 1) // 2,
        ),
        dict(
            name="1p1c maxsize=1",
            items=n1,
            target=1.2,
            fn=lambda m, b: one_to_one(m, n1, 1),
            want=n1 * (n1 - 1) // 2,
        ),
        dict(
            name="asyncq 5x20000, 10 consumers",
            items=100_000 // k,
            target=2.0,
            fn=lambda m, b: asyncq(m, 5, 20_000 // k, 10),
            want=100_000 // k,
        ),
        dict(
            name="asyncq 100x2000, 100 consumers",
            items=200_000 // k,
            target=2.0,
            fn=lambda m, b: asyncq(m, 100, 2_000 // k, 100),
            want=200_000 // k,
        ),
        dict(
            name="asyncq 5x20000, 10 consumers, items made before timing",
            items=100_000 // k,
            target=None,
            fn=lambda m, b: asyncq(m, 5, 20_000 // k, 10, pregen=True),
            want=100_000 // k,
        ),
        dict(
            name="asyncq 100x2000, 100 consumers, items made before timing",
            items=200_000 // k,
            target=None,
            fn=lambda m, b: asyncq(m, 100, 2_000 // k, 100, pregen=True),
            want=200_000 // k,
        ),
        dict(
            name="drain 1M: get_many(256) vs get()",
            items=nd,
            target=10.0,
            fn=lambda m, b: drain(m, nd, b),
            want=nd,
            batched=True,
        ),
        dict(
            name="pipeline 1M: put_many/get_many vs put/get",
            items=nb,
            target=None,
            fn=lambda m, b: batched_pipeline(m, nb, b),
            want=nb,
            batched=True,
        ),
        dict(
            name="put_nowait+get_nowait",
            items=nn,
            target=4.0,
            fn=lambda m, b: nowait_pairs(m, nn),
            want=nn * (nn - 1) // 2,
        ),
    ]


# --- driver -------------------------------------------------------------------------


def _runner(loop_kind):
    from .harness import loop_factory

    return asyncio.Runner(loop_factory=loop_factory(loop_kind))


def _once(runner, w, name, make):
    batched = w.get("batched", False) and name == "rustasync"
    gc.collect()
    out = runner.run(w["fn"](make, batched))
    if out is None:
        return None
    dt, check = out
    if check != w["want"]:
        raise AssertionError(f"{w['name']} / {name}: got {check!r}, want {w['want']!r}")
    return dt


def validate(loop_kind: str) -> None:
    """Small runs of every workload and implementation, checking results
    (and, for the batch APIs, the order of items) before timing."""
    with _runner(loop_kind) as r:
        for w in workloads(quick=True):
            for name, make in implementations().items():
                _once(r, w, name, make)

        async def order():
            q = rustasync.Queue()
            await q.put_many(range(1000))
            got = []
            while len(got) < 1000:
                got += await q.get_many(256)
            assert got == list(range(1000)), "get_many order"

        r.run(order())


def run(args=None) -> list[dict]:
    """Run the benchmarks; `args` is an argparse namespace or an argv list.
    Returns one dict per (workload, implementation)."""
    if args is None or isinstance(args, list):
        args = parse_args(args)
    impls = implementations()
    if args.impls:
        impls = {k: v for k, v in impls.items() if k in args.impls.split(",") + ["asyncio"]}
    ws = [w for w in workloads(args.quick) if not args.only or args.only in w["name"]]
    reps = args.reps or (3 if args.quick else 7)
    validate(args.loop)
    times: dict = {(w["name"], n): [] for w in ws for n in impls}
    rng = random.Random(1234)
    with _runner(args.loop) as r:
        for _ in range(reps):
            for w in ws:
                names = list(impls)
                rng.shuffle(names)
                for name in names:
                    dt = _once(r, w, name, impls[name])
                    if dt is not None:
                        times[(w["name"], name)].append(dt)
    rows = []
    for w in ws:
        base = statistics.median(times[(w["name"], "asyncio")])
        for name in impls:
            ts = times[(w["name"], name)]
            if not ts:
                continue
            med = statistics.median(ts)
            rows.append(
                dict(
                    workload=w["name"],
                    impl=name,
                    loop=args.loop,
                    python=sys.version.split()[0],
                    median_s=med,
                    min_s=min(ts),
                    ns_per_item=med / w["items"] * 1e9,
                    ratio=base / med,
                    target=w["target"] if name == "rustasync" else None,
                    reps=len(ts),
                )
            )
    return rows


def table(rows: list[dict]) -> str:
    out = [
        "| workload | impl | median ms | ns/item | ratio vs asyncio | target |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        target = ""
        if r["target"]:
            target = f"≥ {r['target']:.1f}× {'met' if r['ratio'] >= r['target'] else 'MISSED'}"
        out.append(
            f"| {r['workload']} | {r['impl']} | {r['median_s'] * 1e3:.1f} | "
            f"{r['ns_per_item']:.0f} | {r['ratio']:.2f}× | {target} |"
        )
    return "\n".join(out)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="10x smaller, 3 repetitions")
    p.add_argument("--loop", choices=["asyncio", "uvloop", "rloop"], default="asyncio")
    p.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    p.add_argument("--reps", type=int, default=0, help="repetitions (default 7, quick 3)")
    p.add_argument("--only", default="", help="run the workloads whose name contains this")
    p.add_argument("--impls", default="", help="comma-separated implementations (asyncio always)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    rows = run(args)
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print(f"Python {sys.version.split()[0]}, loop={args.loop}, medians of {rows[0]['reps']}")
        print(table(rows))


if __name__ == "__main__":
    main()
