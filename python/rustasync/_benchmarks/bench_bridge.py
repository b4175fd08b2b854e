"""rustasync-bridge against pyo3-async-runtimes, the same Rust futures.

    python benchmarks/bench_bridge.py [--reps 5] [--quick] [--uvloop | --rloop] [--only ready,gather]

Workloads (pyo3-async-runtimes 0.30, `tokio` module, in the same process):
  ready       100,000 `await f(i)` in turn, the future ready at once
              (`future_into_py(py, async move { Ok(i) })`)
  roundtrip   10,000 `await f(i)` in turn, each one trip through tokio
              (`tokio::task::yield_now().await; Ok(i)`)
  concurrent  100,000 one-trip futures created first, so all are in
              flight at once, then awaited
  gather      1,000 `asyncio.gather` of 100 ready no-op calls: the
              workload of pyo3-async-runtimes' own performance PR (#83)
  into_future 10,000 coroutines awaited from one bridged future on a
              tokio worker, all scheduled first, through either crate's
              `into_future`; then 2,000 one at a time

Every variant runs once untimed and its result is checked; then the timed
rounds are interleaved (round 1 of every variant, then round 2, ...), each
result checked again, and medians reported with the ratio
pyo3-async-runtimes time / rustasync-bridge time (above 1: the crate is
faster). Only the awaits are timed, not the loop's creation.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from rustasync import _rustasync as _ra

OURS = "rustasync-bridge"
THEIRS = "pyo3-async-runtimes"

Timed = Callable[[], Awaitable[tuple[float, Any]]]


def _in_turn(make: Callable[[int], Any], n: int) -> Timed:
    async def main() -> tuple[float, Any]:
        t0 = time.perf_counter()
        tot = 0
        for i in range(n):
            tot += await make(i)
        return time.perf_counter() - t0, tot

    return main


def _all_at_once(make: Callable[[int], Any], n: int) -> Timed:
    async def main() -> tuple[float, Any]:
        t0 = time.perf_counter()
        futs = [make(i) for i in range(n)]
        tot = 0
        for f in futs:
            tot += await f
        return time.perf_counter() - t0, tot

    return main


def _gathers(make: Callable[[Any], Any], rounds: int, width: int) -> Timed:
    async def main() -> tuple[float, Any]:
        gather = asyncio.gather
        t0 = time.perf_counter()
        n = 0
        for _ in range(rounds):
            got = await gather(*[make(None) for _ in range(width)])
            n += got.count(None)
        return time.perf_counter() - t0, n

    return main


async def _ident(i: int) -> int:
    return i


def _into_future(via: str, n: int, at_once: bool) -> Timed:
    async def main() -> tuple[float, Any]:
        t0 = time.perf_counter()
        r = await _ra._rust_await_each(via, _ident, n, at_once)
        return time.perf_counter() - t0, r

    return main


def _workloads(quick: bool) -> list[dict[str, Any]]:
    """Each workload: its name, call count, both variants, the expected
    result, and the target ratio."""
    k = 10 if quick else 1
    n_ready, n_trip, n_conc = 100_000 // k, 10_000 // k, 100_000 // k
    g_rounds, n_into, n_into_seq = 1_000 // k, 10_000 // k, 2_000 // k
    tri = lambda n: n * (n - 1) // 2  # noqa: E731
    return [
        {
            "key": "ready",
            "workload": f"{n_ready:,} ready futures, awaited in turn",
            "calls": n_ready,
            THEIRS: _in_turn(_ra._pyo3_async_runtimes_ready, n_ready),
            OURS: _in_turn(_ra._rust_ready, n_ready),
            "expect": tri(n_ready),
            "target": 5,
        },
        {
            "key": "roundtrip",
            "workload": f"{n_trip:,} one-trip futures (tokio yield_now), awaited in turn",
            "calls": n_trip,
            THEIRS: _in_turn(_ra._pyo3_async_runtimes_yield, n_trip),
            OURS: _in_turn(_ra._rust_yield, n_trip),
            "expect": tri(n_trip),
            "target": 5,
        },
        {
            "key": "concurrent",
            "workload": f"{n_conc:,} concurrent awaits of one-trip futures",
            "calls": n_conc,
            THEIRS: _all_at_once(_ra._pyo3_async_runtimes_yield, n_conc),
            OURS: _all_at_once(_ra._rust_yield, n_conc),
            "expect": tri(n_conc),
            "target": 5,
        },
        {
            "key": "gather",
            "workload": f"{g_rounds:,} gathers of 100 no-op calls (PR #83's workload)",
            "calls": g_rounds * 100,
            THEIRS: _gathers(_ra._pyo3_async_runtimes_ready, g_rounds, 100),
            OURS: _gathers(_ra._rust_ready, g_rounds, 100),
            "expect": g_rounds * 100,
            "target": 5,
        },
        {
            "key": "into_future",
            "workload": f"into_future: {n_into:,} coroutines awaited from Rust, scheduled at once",
            "calls": n_into,
            THEIRS: _into_future(THEIRS, n_into, True),
            OURS: _into_future(OURS, n_into, True),
            "expect": [n_into, tri(n_into)],
            "target": 2,
        },
        {
            "key": "into_future",
            "workload": f"into_future: {n_into_seq:,} coroutines awaited from Rust in turn",
            "calls": n_into_seq,
            THEIRS: _into_future(THEIRS, n_into_seq, False),
            OURS: _into_future(OURS, n_into_seq, False),
            "expect": [n_into_seq, tri(n_into_seq)],
            "target": 2,
        },
    ]


def _once(timed: Timed, expect: Any) -> float:
    dt, got = asyncio.run(timed())
    got = list(got) if isinstance(got, tuple) else got
    assert got == expect, (got, expect)
    return dt


def run(args: argparse.Namespace | None = None) -> list[dict[str, Any]]:
    """Run the selected workloads; one row per workload."""
    args = args or parse_args([])
    only = {k.strip() for k in args.only.split(",") if k.strip()}
    chosen = [w for w in _workloads(args.quick) if not only or w["key"] in only]
    for w in chosen:  # checked once, untimed, before any timing
        for via in (THEIRS, OURS):
            _once(w[via], w["expect"])
    times: dict[tuple[int, str], list[float]] = {}
    for _ in range(args.reps):
        for i, w in enumerate(chosen):
            for via in (THEIRS, OURS):
                gc.collect()
                times.setdefault((i, via), []).append(_once(w[via], w["expect"]))
    rows = []
    for i, w in enumerate(chosen):
        theirs = statistics.median(times[(i, THEIRS)])
        ours = statistics.median(times[(i, OURS)])
        rows.append(
            {
                "workload": w["workload"],
                "pyo3_async_runtimes_us_per_call": theirs / w["calls"] * 1e6,
                "rustasync_bridge_us_per_call": ours / w["calls"] * 1e6,
                "ratio": theirs / ours,
                "target": w["target"],
            }
        )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    out = [
        "| workload | loop | pyo3-async-runtimes µs/call | rustasync-bridge µs/call "
        "| ratio | target |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        met = "met" if r["ratio"] >= r["target"] else "MISSED"
        out.append(
            f"| {r['workload']} | {r.get('loop', '')} "
            f"| {r['pyo3_async_runtimes_us_per_call']:.2f} "
            f"| {r['rustasync_bridge_us_per_call']:.2f} "
            f"| {r['ratio']:.1f}× | ≥ {r['target']}× {met} |"
        )
    return "\n".join(out)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="10x smaller workloads")
    p.add_argument(
        "--only", default="", help="comma-separated workloads: ready,roundtrip,concurrent,..."
    )
    p.add_argument("--uvloop", action="store_true", help="run every loop on uvloop")
    p.add_argument("--rloop", action="store_true", help="run every loop on rloop")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    loop = "uvloop" if args.uvloop else "rloop" if args.rloop else "asyncio"
    if loop != "asyncio":
        asyncio.set_event_loop_policy(importlib.import_module(loop).EventLoopPolicy())
    print(
        f"Python {sys.version.split()[0]}, {loop} loop, {args.reps} interleaved rounds, medians\n"
    )
    print(table([{**r, "loop": loop} for r in run(args)]))


if __name__ == "__main__":
    main()
