"""Side-by-side timing: stock asyncio vs rustasync in one process.

Every workload is a pair of zero-argument callables returning coroutines
(stock, rustasync) plus a check of their results. The harness validates both
results first, then times interleaved rounds (alternating which side goes
first), each on a fresh event loop, and reports the median of each side and
their ratio (stock time / rustasync time; above 1 means rustasync is faster).
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import statistics
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass, field
from typing import Any

CoroFn = Callable[[], Coroutine[Any, Any, Any]]


@dataclass
class Result:
    group: str
    workload: str
    loop: str
    target: str
    stock_median_s: float
    rust_median_s: float
    ratio: float
    rounds: int
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """asyncio's `new_event_loop`, or that of the module `name` (uvloop, rloop)."""
    if name == "asyncio":
        return asyncio.new_event_loop
    factory: Callable[[], asyncio.AbstractEventLoop] = importlib.import_module(name).new_event_loop
    return factory


def run_once(fn: CoroFn, loop: str) -> tuple[float, Any]:
    gc.collect()
    with asyncio.Runner(loop_factory=loop_factory(loop)) as runner:
        t0 = time.perf_counter()
        value = runner.run(fn())
        elapsed = time.perf_counter() - t0
    return elapsed, value


def progress(msg: str) -> None:
    if sys.stderr.isatty():
        sys.stderr.write("\r\x1b[K" + msg)
    else:
        sys.stderr.write(msg + "\n")
    sys.stderr.flush()


def compare(
    group: str,
    workload: str,
    stock: CoroFn,
    rust: CoroFn,
    check: Callable[[Any], None],
    *,
    loop: str = "asyncio",
    rounds: int = 5,
    target: str = "",
    extra: Callable[[Any, Any], dict[str, Any]] | None = None,
) -> Result:
    """Validate both sides, then time `rounds` interleaved rounds."""
    progress(f"[{loop}] {workload}: checking results")
    _, sv = run_once(stock, loop)
    check(sv)
    _, rv = run_once(rust, loop)
    check(rv)
    st: list[float] = []
    rt: list[float] = []
    svals: list[Any] = []
    rvals: list[Any] = []
    for r in range(rounds):
        progress(f"[{loop}] {workload}: round {r + 1}/{rounds}")
        order = [(stock, st, svals), (rust, rt, rvals)]
        if r % 2:
            order.reverse()
        for fn, times, vals in order:
            t, v = run_once(fn, loop)
            times.append(t)
            vals.append(v)
    if sys.stderr.isatty():
        progress("")
    sm, rm = statistics.median(st), statistics.median(rt)
    return Result(
        group=group,
        workload=workload,
        loop=loop,
        target=target,
        stock_median_s=sm,
        rust_median_s=rm,
        ratio=sm / rm if rm else float("inf"),
        rounds=rounds,
        extra=extra(svals, rvals) if extra else {},
    )


def table(results: list[Result] | list[dict[str, Any]]) -> str:
    """A Markdown table of results."""
    rows = [r.as_dict() if isinstance(r, Result) else r for r in results]
    out = [
        "| workload | loop | stock median | rustasync median | ratio | target | notes |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        notes = ", ".join(f"{k}={v}" for k, v in (r.get("extra") or {}).items())
        out.append(
            f"| {r['workload']} | {r['loop']} | {r['stock_median_s'] * 1e3:.1f} ms "
            f"| {r['rust_median_s'] * 1e3:.1f} ms | {r['ratio']:.2f}x | {r['target']} | {notes} |"
        )
    return "\n".join(out)
