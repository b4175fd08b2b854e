"""`python -m rustasync stress`: many threads, each running event loops full
of rustasync traffic, with every item accounted for.

Each thread runs ``--loops`` event loops one after another (alternating the
stock loop and uvloop when it is installed), splitting ``--seconds`` between
them. On each loop, tasks for a fixed time:

* put unique items on a queue (a ``Queue``, ``LifoQueue`` or
  ``PriorityQueue`` with a random bound) with ``put``, ``put_nowait`` and
  ``put_many``; ``put`` runs under random ``asyncio.timeout``s and
  cancellations;
* get them with ``get``, ``get_many``, ``get_nowait`` and ``async for``,
  also under timeouts and cancellations, calling ``task_done`` for each;
* ``gather`` sleeps and coroutines (some failing, some cancelled) and check
  the results;
* sleep under ``asyncio.timeout``s shorter and longer than the sleep.

At the end of each loop the queue is shut down and drained, ``join()`` must
return, and every item whose put completed must have been got exactly once
(an item whose put was cancelled must not appear). The totals are printed;
the exit status is 1 on any discrepancy, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence

import rustasync

try:
    import uvloop
except ImportError:  # pragma: no cover - optional
    uvloop = None

QUEUES = (rustasync.Queue, rustasync.LifoQueue, rustasync.PriorityQueue)


class Tally:
    """Totals of one thread (merged at the end)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.problems: list[str] = []

    def problem(self, text: str) -> None:
        if len(self.problems) < 20:
            self.problems.append(text)
        self.counts["discrepancies"] += 1


async def _loop_work(seconds: float, rng: random.Random, tally: Tally, base: int) -> None:
    c = tally.counts
    kind = rng.choice(QUEUES)
    q = kind(rng.choice([0, 1, 3, 16]))
    confirmed: set[int] = set()  # items whose put completed
    cancelled: set[int] = set()  # items whose put was cancelled or timed out
    # Items of a put_many that was cancelled: the ones stored before the
    # cancellation stay (its documented cancel safety), the rest do not.
    uncertain: set[int] = set()
    got: Counter[int] = Counter()
    seq = iter(range(base, base + 10**9))
    deadline = asyncio.get_running_loop().time() + seconds

    def running() -> bool:
        return asyncio.get_running_loop().time() < deadline

    async def producer() -> None:
        while running():
            how = rng.random()
            if how < 0.15:
                items = [next(seq) for _ in range(rng.randint(1, 5))]
                try:
                    await q.put_many(items)
                except asyncio.CancelledError:
                    uncertain.update(items)
                    raise
                confirmed.update(items)
                c["puts"] += len(items)
            elif how < 0.3:
                item = next(seq)
                try:
                    q.put_nowait(item)
                except rustasync.QueueFull:
                    c["put_nowait full"] += 1
                    continue
                confirmed.add(item)
                c["puts"] += 1
            else:
                item = next(seq)
                try:
                    async with asyncio.timeout(rng.choice([None, 0, 0.0005, 0.002])):
                        await q.put(item)
                except TimeoutError:
                    cancelled.add(item)
                    c["puts timed out"] += 1
                    continue
                confirmed.add(item)
                c["puts"] += 1
            if rng.random() < 0.3:
                await rustasync.sleep(rng.choice([0, 0.0001]))

    def took(items: list[int]) -> None:
        for x in items:
            got[x] += 1
        q.task_done(len(items)) if items else None
        c["gets"] += len(items)

    async def consumer() -> None:
        while running():
            how = rng.random()
            try:
                async with asyncio.timeout(rng.choice([None, 0.001, 0.003])):
                    if how < 0.3:
                        took(await q.get_many(rng.randint(1, 8)))
                    elif how < 0.4:
                        try:
                            took(q.get_nowait_many(rng.randint(1, 4)))
                        except rustasync.QueueEmpty:
                            await rustasync.sleep(0)
                    else:
                        took([await q.get()])
            except TimeoutError:
                c["gets timed out"] += 1

    async def canceller(tasks: list[asyncio.Task[None]], spawn: Callable[[], asyncio.Task[None]]):
        """Cancel random workers at random points and start replacements."""
        while running():
            await rustasync.sleep(rng.choice([0, 0.0005, 0.002]))
            i = rng.randrange(len(tasks))
            t = tasks[i]
            t.cancel()
            try:
                await t
            except asyncio.CancelledError:
                c["workers cancelled"] += 1
            tasks[i] = spawn()

    async def gatherer() -> None:
        async def fail(i: int) -> int:
            await rustasync.sleep(0)
            raise KeyError(i)

        async def value(i: int) -> int:
            await rustasync.sleep(rng.choice([0, 0.0002]))
            return i

        while running():
            n = rng.randint(1, 12)
            aws = [
                rustasync.sleep(rng.choice([0, 0.0001, 0.001]), i) if i % 2 else value(i)
                for i in range(n)
            ]
            bad = rng.random() < 0.2
            if bad:
                aws.append(fail(n))
            g = rustasync.gather(*aws, return_exceptions=rng.random() < 0.5)
            if rng.random() < 0.1:
                asyncio.get_running_loop().call_soon(g.cancel)
            try:
                res = await g
            except KeyError:
                c["gathers failed"] += 1
                continue
            except asyncio.CancelledError:
                if asyncio.current_task().cancelling():  # type: ignore[union-attr]
                    raise
                c["gathers cancelled"] += 1
                continue
            if res[:n] != list(range(n)) or (bad and not isinstance(res[n], KeyError)):
                tally.problem(f"gather returned {res!r} for {n} children (bad={bad})")
            c["gathers"] += 1

    async def sleeper() -> None:
        while running():
            d = rng.choice([0, 0.0005, 0.002])
            limit = rng.choice([0.0001, 0.01])
            try:
                async with asyncio.timeout(limit):
                    r = await rustasync.sleep(d, d)
                if r != d:
                    tally.problem(f"sleep({d}) returned {r!r}")
                c["sleeps"] += 1
            except TimeoutError:
                c["sleeps timed out"] += 1

    spawners: list[Callable[[], asyncio.Task[None]]] = [
        lambda: asyncio.create_task(producer()),
        lambda: asyncio.create_task(consumer()),
    ]
    producers = [spawners[0]() for _ in range(3)]
    consumers = [spawners[1]() for _ in range(3)]
    others = [asyncio.create_task(f()) for f in (gatherer, sleeper, sleeper)]
    chaos = [
        asyncio.create_task(canceller(producers, spawners[0])),
        asyncio.create_task(canceller(consumers, spawners[1])),
    ]
    await asyncio.gather(*chaos, *others)
    # A producer cancelled inside `await q.put(item)` never stored its item;
    # one cancelled elsewhere has no item in flight. Either way the item is
    # not confirmed, and it must not be got.
    for t in producers + consumers:
        t.cancel()
    await asyncio.gather(*producers, *consumers, return_exceptions=True)

    q.shutdown()
    async for item in q:
        took([item])
    try:
        async with asyncio.timeout(5):
            await q.join()
    except TimeoutError:
        tally.problem(f"join() did not return: {q!r}")

    dup = [x for x, n in got.items() if n > 1]
    lost = confirmed - got.keys()
    ghost = got.keys() - confirmed - uncertain
    ghost_cancelled = ghost & cancelled
    if dup:
        tally.problem(f"{len(dup)} items got more than once, e.g. {dup[:5]}")
    if lost:
        tally.problem(f"{len(lost)} items lost, e.g. {sorted(lost)[:5]}")
    if ghost:
        tally.problem(
            f"{len(ghost)} items got that were never confirmed "
            f"({len(ghost_cancelled)} of them from cancelled puts)"
        )
    if q.qsize() != 0:
        tally.problem(f"queue not empty at the end: {q!r}")
    c["items from cancelled put_many"] += len(got.keys() & uncertain)
    c["items produced"] += len(confirmed)
    c["items consumed"] += sum(got.values())
    c["loops"] += 1


def _thread(index: int, args: argparse.Namespace, tally: Tally) -> None:
    rng = random.Random(args.seed * 1000 + index)
    per_loop = args.seconds / args.loops
    for n in range(args.loops):
        use_uv = (
            uvloop is not None
            and args.kind in ("uvloop", "both")
            and (args.kind == "uvloop" or n % 2 == 1)
        )
        factory = uvloop.new_event_loop if use_uv else asyncio.new_event_loop
        base = (index * args.loops + n) * 10**9
        try:
            with asyncio.Runner(loop_factory=factory) as runner:
                runner.run(_loop_work(per_loop, rng, tally, base))
        except BaseException as e:  # noqa: BLE001 - reported, never hidden
            tally.problem(f"thread {index} loop {n}: {type(e).__name__}: {e}")


def _positive_float(text: str) -> float:
    value = float(text)
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text!r}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m rustasync stress",
        description="Threads each running event loops of rustasync traffic (queues, "
        "gathers, sleeps, cancellations, timeouts) for a fixed time; every item is "
        "accounted for. Exits 1 on any discrepancy.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--seconds", type=_positive_float, default=3.0, help="total run time")
    p.add_argument("--threads", type=_positive_int, default=2, help="threads, each with loops")
    p.add_argument(
        "--loops", type=_positive_int, default=2, help="event loops each thread runs in turn"
    )
    p.add_argument(
        "--kind",
        choices=("asyncio", "uvloop", "both"),
        default="both",
        help="event loop kind (both: alternate, when uvloop is installed)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the stress test; returns the exit status."""
    args = _parser().parse_args(argv)
    tallies = [Tally() for _ in range(args.threads)]
    threads = [
        threading.Thread(target=_thread, args=(i, args, tallies[i]), name=f"stress-{i}")
        for i in range(args.threads)
    ]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    total: Counter[str] = Counter()
    problems: list[str] = []
    for t in tallies:
        total.update(t.counts)
        problems += t.problems
    total["discrepancies"] += 0
    expected = total["items produced"] + total["items from cancelled put_many"]
    if total["items consumed"] != expected:
        problems.append(f"{total['items consumed']} items consumed, {expected} expected")
        total["discrepancies"] += 1
    print(f"stress: {args.threads} threads x {args.loops} loops, {elapsed:.1f} s")
    width = max(map(len, total))
    for name in sorted(total):
        print(f"  {name:<{width}} {total[name]}")
    for text in problems:
        print(f"  problem: {text}", file=sys.stderr)
    return 1 if total["discrepancies"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
