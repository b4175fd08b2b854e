"""sleep and gather: rustasync vs stock asyncio (see harness.py)."""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

import rustasync

from .harness import Result, compare, table

IMPLS = {"stock": (asyncio.sleep, asyncio.gather), "rust": (rustasync.sleep, rustasync.gather)}


def _trivial_gather(n: int):
    def make(kind):
        _, gather = IMPLS[kind]

        async def f(i):
            return i

        async def main():
            return await gather(*(f(i) for i in range(n)))

        return main

    return make


def _sleep0_gather(n: int, k: int):
    def make(kind):
        sleep, gather = IMPLS[kind]

        async def f(i):
            for _ in range(k):
                await sleep(0)
            return i

        async def main():
            return await gather(*(f(i) for i in range(n)))

        return main

    return make


def _concurrent_sleep_tasks(n: int, delay: float):
    def make(kind):
        sleep, gather = IMPLS[kind]

        async def worker():
            t0 = time.perf_counter()
            await sleep(delay)
            return time.perf_counter() - t0 - delay

        async def main():
            return await gather(*(worker() for _ in range(n)))

        return main

    return make


def _direct_sleeps(n: int, delay: float):
    def make(kind):
        sleep, gather = IMPLS[kind]

        async def main():
            return await gather(*(sleep(delay, i) for i in range(n)))

        return main

    return make


def _sequential_sleeps(n: int, delay: float):
    def make(kind):
        sleep, _ = IMPLS[kind]

        async def main():
            late = []
            for _ in range(n):
                t0 = time.perf_counter()
                await sleep(delay)
                late.append(time.perf_counter() - t0 - delay)
            return late

        return main

    return make


def _chained(n: int):
    def make(kind):
        sleep, gather = IMPLS[kind]

        async def part1(i):
            await sleep(0)
            return f"result{i}-1"

        async def part2(i, arg):
            await sleep(0)
            return f"result{i}-2 derived from {arg}"

        async def chain(i):
            p1 = await part1(i)
            return await part2(i, p1)

        async def main():
            return await gather(*(chain(i) for i in range(n)))

        return main

    return make


def _lateness(svals: list[Any], rvals: list[Any]) -> dict[str, Any]:
    def stats(vals):
        flat = sorted(x for v in vals for x in v)
        p99 = flat[int(len(flat) * 0.99) - 1]
        return statistics.median(flat) * 1e3, p99 * 1e3

    (sm, sp), (rm, rp) = stats(svals), stats(rvals)
    return {
        "lateness_median_ms": f"{sm:.3f}/{rm:.3f}",
        "lateness_p99_ms": f"{sp:.3f}/{rp:.3f}",
    }


def run(args: argparse.Namespace) -> list[Result]:
    scale = 10 if args.quick else 1
    rounds = 3 if args.quick else args.rounds
    out = []
    for loop in args.loops:
        n = 100_000 // scale
        w = _trivial_gather(n)
        out.append(
            compare(
                "gather",
                f"gather of {n:,} trivial coroutines",
                w("stock"),
                w("rust"),
                lambda v, n=n: _eq(v, list(range(n))),
                loop=loop,
                rounds=rounds,
                target=">= 2.0x",
            )
        )
        n = 10_000 // scale
        w = _sleep0_gather(n, 10)
        out.append(
            compare(
                "gather",
                f"gather of {n:,} coroutines x 10 sleep(0)",
                w("stock"),
                w("rust"),
                lambda v, n=n: _eq(v, list(range(n))),
                loop=loop,
                rounds=rounds,
                target=">= 1.15x",
            )
        )
        n = 50_000 // scale
        w = _concurrent_sleep_tasks(n, 0.05)
        out.append(
            compare(
                "sleep",
                f"{n:,} concurrent sleep(0.05) tasks",
                w("stock"),
                w("rust"),
                lambda v, n=n: _check_late(v, n),
                loop=loop,
                rounds=rounds,
                target=">= 2.0x, lateness no worse",
                extra=_lateness,
            )
        )
        n = 100_000 // scale
        w = _direct_sleeps(n, 0.01)
        out.append(
            compare(
                "sleep",
                f"gather of {n:,} sleep(0.01) directly",
                w("stock"),
                w("rust"),
                lambda v, n=n: _eq(v, list(range(n))),
                loop=loop,
                rounds=rounds,
                target=">= 4.0x",
            )
        )
        w = _sequential_sleeps(200, 0.001)
        out.append(
            compare(
                "sleep",
                "200 sequential sleep(0.001)",
                w("stock"),
                w("rust"),
                lambda v: _check_late(v, 200),
                loop=loop,
                rounds=rounds,
                target="median lateness within 0.1 ms",
                extra=_lateness,
            )
        )
        n = 50_000 // scale
        w = _chained(n)
        out.append(
            compare(
                "gather",
                f"chained.py shape, {n:,} chains, sleep(0)",
                w("stock"),
                w("rust"),
                lambda v, n=n: _eq(v[-1], f"result{n - 1}-2 derived from result{n - 1}-1"),
                loop=loop,
                rounds=rounds,
                target=">= 1.3x",
            )
        )
    return out


def _eq(got: Any, want: Any) -> None:
    if got != want:
        raise AssertionError(f"wrong result: {str(got)[:80]} != {str(want)[:80]}")


def _check_late(v: list[float], n: int) -> None:
    if len(v) != n or min(v) < -0.0015:  # uvloop's clock is in milliseconds
        raise AssertionError("a sleep woke early or went missing")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument(
        "--loops", nargs="+", default=["asyncio"], choices=["asyncio", "uvloop", "rloop"]
    )
    args = p.parse_args()
    print(table(run(args)))


if __name__ == "__main__":
    main()
