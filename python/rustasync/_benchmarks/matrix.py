"""The benchmark matrix: rustasync, the fast loops and the queue peers, in one table.

Every cell of a row is the ratio of one baseline's median time to the cell's:
the baseline is the stock asyncio code on asyncio's own loop, so above 1 is
faster than stock asyncio, and the columns of a row compare with each other.

- ``rustasync``: the same code with rustasync's sleep, gather or Queue, on
  asyncio's loop;
- ``uvloop alone`` / ``rloop alone``: the stock asyncio code on that loop;
- ``rustasync on uvloop`` / ``rustasync on rloop``: rustasync on that loop;
- ``janus``, ``culsans``, ``aiologic`` (queue rows): their asyncio-side queues
  on asyncio's loop (aiologic has no ``task_done``/``join``: producer and
  consumer rows only).

Every variant's result is checked before anything is timed; then each round
runs every variant of the row once, in an order shuffled per round, each on a
fresh event loop, all in this process; the medians of the rounds are compared.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import importlib.util
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import bench_core, bench_queue
from .harness import loop_factory, progress

LOOPS = ("asyncio", "uvloop", "rloop")
PEERS = ("janus", "culsans", "aiologic")


def installed(name: str) -> bool:
    return name == "asyncio" or importlib.util.find_spec(name) is not None


@dataclass
class Row:
    """One workload: `run(impl, loop)` returns the seconds one run took,
    after checking its result; `impls` are the implementations it compares
    (the first is the stock one)."""

    name: str
    impls: tuple[str, ...]
    run: Callable[[str, str], float | None]


def _core_row(name: str, make: Any, check: Callable[[Any], None]) -> Row:
    def run(impl: str, loop: str) -> float:
        fn = make("stock" if impl == "asyncio" else "rust")
        gc.collect()
        with asyncio.Runner(loop_factory=loop_factory(loop)) as runner:
            t0 = time.perf_counter()
            value = runner.run(fn())
            elapsed = time.perf_counter() - t0
        check(value)
        return elapsed

    return Row(name, ("asyncio", "rustasync"), run)


def _queue_row(name: str, w: dict[str, Any], impls: dict[str, Any]) -> Row:
    def run(impl: str, loop: str) -> float | None:
        gc.collect()
        with asyncio.Runner(loop_factory=loop_factory(loop)) as runner:
            out = runner.run(w["fn"](impls[impl], False))
        if out is None:  # the implementation lacks what the workload needs
            return None
        elapsed, got = out
        if got != w["want"]:
            raise AssertionError(f"{name} / {impl} on {loop}: got {got!r}, want {w['want']!r}")
        return float(elapsed)

    return Row(name, tuple(impls), run)


def _eq(want: Any) -> Callable[[Any], None]:
    def check(got: Any) -> None:
        if got != want:
            raise AssertionError(f"wrong result: {str(got)[:80]} != {str(want)[:80]}")

    return check


def rows(quick: bool) -> list[Row]:
    """The matrix's workloads: the queue rows, then sleep and gather."""
    k = 10 if quick else 1
    impls = bench_queue.implementations()
    by_name = {w["name"]: w for w in bench_queue.workloads(quick)}
    out = [
        _queue_row("1p1c queue, maxsize 0", by_name["1p1c maxsize=0"], impls),
        _queue_row("1p1c queue, maxsize 100", by_name["1p1c maxsize=100"], impls),
        _queue_row("asyncq 5p x 10c", by_name["asyncq 5x20000, 10 consumers"], impls),
        _queue_row("asyncq 100p x 100c", by_name["asyncq 100x2000, 100 consumers"], impls),
    ]
    n = 100_000 // k
    out.append(
        _core_row(
            f"gather of {n // 1000}k trivial coroutines",
            bench_core._trivial_gather(n),
            _eq(list(range(n))),
        )
    )
    n = 10_000 // k
    out.append(
        _core_row(
            f"gather {n // 1000}k x 10 sleep(0)",
            bench_core._sleep0_gather(n, 10),
            _eq(list(range(n))),
        )
    )
    n = 50_000 // k
    out.append(
        _core_row(
            f"{n // 1000}k concurrent sleep(0.05)",
            bench_core._concurrent_sleep_tasks(n, 0.05),
            lambda v, n=n: bench_core._check_late(v, n),
        )
    )
    out.append(
        _core_row(
            f"chained shape, {n // 1000}k chains",
            bench_core._chained(n),
            lambda v, n=n: _eq(f"result{n - 1}-2 derived from result{n - 1}-1")(v[-1]),
        )
    )
    return out


def variants(row: Row, loops: list[str]) -> list[tuple[str, str]]:
    """(impl, loop) pairs of a row: stock and rustasync on every loop, the
    peers on asyncio's loop. The first is the baseline."""
    out = [(impl, loop) for loop in loops for impl in ("asyncio", "rustasync")]
    out += [(impl, "asyncio") for impl in row.impls if impl in PEERS]
    return out


def measure(row: Row, loops: list[str], rounds: int, seed: int = 1234) -> dict[str, Any]:
    """Check every variant, then time `rounds` interleaved rounds."""
    vs = []
    for impl, loop in variants(row, loops):
        progress(f"{row.name}: checking {impl} on {loop}")
        if row.run(impl, loop) is not None:
            vs.append((impl, loop))
    times: dict[tuple[str, str], list[float]] = {v: [] for v in vs}
    rng = random.Random(seed)
    for r in range(rounds):
        progress(f"{row.name}: round {r + 1}/{rounds}")
        order = list(vs)
        rng.shuffle(order)
        for v in order:
            t = row.run(*v)
            assert t is not None
            times[v].append(t)
    if sys.stderr.isatty():
        progress("")
    base = statistics.median(times[("asyncio", "asyncio")])
    cells = {
        f"{impl}@{loop}": {
            "median_s": statistics.median(ts),
            "ratio": base / statistics.median(ts),
        }
        for (impl, loop), ts in times.items()
    }
    return {"workload": row.name, "rounds": rounds, "cells": cells}


def column_names(loops: list[str]) -> list[tuple[str, str]]:
    """(cell key, column title) in table order."""
    cols = [("rustasync@asyncio", "rustasync")]
    for loop in loops:
        if loop != "asyncio":
            cols += [
                (f"asyncio@{loop}", f"{loop} alone"),
                (f"rustasync@{loop}", f"rustasync on {loop}"),
            ]
    cols += [(f"{p}@asyncio", p) for p in PEERS]
    return cols


def table(result: dict[str, Any]) -> str:
    """A Markdown table of one interpreter's matrix."""
    cols = [
        (key, title)
        for key, title in column_names(result["loops"])
        if any(key in r["cells"] for r in result["rows"])
    ]
    out = [
        f"Python {result['python']} ({result['machine']}); {result['rounds']} interleaved rounds; "
        "ratio = median time of stock asyncio code on asyncio's loop / median time of the cell "
        "(above 1: faster)",
        "",
        "| workload | " + " | ".join(title for _, title in cols) + " |",
        "|---|" + "---|" * len(cols),
    ]
    for r in result["rows"]:
        cells = [f"{r['cells'][k]['ratio']:.2f}x" if k in r["cells"] else "-" for k, _ in cols]
        out.append(f"| {r['workload']} | " + " | ".join(cells) + " |")
    missing = result.get("missing") or []
    if missing:
        out += ["", f"Not installed on this Python: {', '.join(missing)}."]
    return "\n".join(out)


def run(loops: list[str] | None, rounds: int, quick: bool) -> dict[str, Any]:
    """The matrix on this interpreter, on `loops` (default: every one installed)."""
    wanted = list(loops or LOOPS)
    if "asyncio" not in wanted:
        wanted.insert(0, "asyncio")
    use = [lp for lp in wanted if installed(lp)]
    missing = [name for name in [*wanted, *PEERS] if not installed(name)]
    results = [measure(row, use, rounds) for row in rows(quick)]
    return {
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "loops": use,
        "rounds": rounds,
        "quick": quick,
        "missing": missing,
        "rows": results,
    }
