"""python -m rustasync bench: every benchmark, side by side with stock asyncio.

Suites: core (sleep and gather), queue (the queues against asyncio.Queue and
janus, culsans, aiologic when installed), channel (Channel, the Rust asyncq
engine, the Rust-future bridge), bridge (rustasync-bridge against
pyo3-async-runtimes: future_into_py and into_future). Each suite validates
its results before timing and reports medians of interleaved rounds and the
ratio stock time / rustasync time (above 1: rustasync is faster). The peers come with
pip install rustasync[bench].
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

SUITES = ("core", "queue", "channel", "bridge")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m rustasync bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="smaller workloads, fewer rounds")
    p.add_argument(
        "--rounds", type=int, default=5, help="interleaved rounds per workload (default: 5)"
    )
    p.add_argument(
        "--loops",
        nargs="+",
        default=["asyncio"],
        choices=["asyncio", "uvloop"],
        help="event loops to run every workload on (default: asyncio)",
    )
    p.add_argument(
        "--only",
        nargs="+",
        choices=SUITES,
        default=list(SUITES),
        metavar="SUITE",
        help=f"suites to run, among {', '.join(SUITES)} (default: all)",
    )
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON ('-' = stdout)")
    return p


def _rows(results: list[Any]) -> list[dict[str, Any]]:
    return [r.as_dict() if hasattr(r, "as_dict") else dict(r) for r in results]


def _suite_argv(suite: str, loop: str, args: argparse.Namespace) -> list[str]:
    """Translate the common options into a suite's own command line."""
    argv = ["--reps", str(args.rounds)] + (["--quick"] if args.quick else [])
    if suite == "queue":
        argv += ["--loop", loop]
    elif loop == "uvloop":
        argv.append("--uvloop")
    return argv


def _run_suite(suite: str, mod: Any, args: argparse.Namespace) -> list[Any]:
    """Run one suite on every requested loop."""
    if not hasattr(mod, "parse_args"):
        return list(mod.run(args))
    import asyncio

    out: list[Any] = []
    for loop in args.loops:
        if loop == "uvloop" and suite != "queue":
            import uvloop

            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        try:
            for row in mod.run(mod.parse_args(_suite_argv(suite, loop, args))):
                out.append({**row, "loop": loop})
        finally:
            asyncio.set_event_loop_policy(None)
    return out


def _generic_table(rows: list[dict[str, Any]]) -> str:
    keys = [k for k in rows[0] if k != "extra"]
    out = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for r in rows:
        cells = []
        for k in keys:
            v = r.get(k)
            cells.append(f"{v:.4g}" if isinstance(v, float) else str(v))
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def _tables(harness: Any, rows: list[dict[str, Any]]) -> str:
    std = [r for r in rows if "stock_median_s" in r]
    other = [r for r in rows if "stock_median_s" not in r]
    parts = [harness.table(std)] if std else []
    if other:
        parts.append(_generic_table(other))
    return "\n\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.rounds < 1:
        _parser().error("--rounds must be at least 1")
    harness = importlib.import_module("rustasync._benchmarks.harness")
    rows: list[dict[str, Any]] = []
    printed: list[str] = []
    for suite in args.only:
        try:
            mod = importlib.import_module(f"rustasync._benchmarks.bench_{suite}")
        except ImportError as e:
            print(f"skipping {suite}: {e}", file=sys.stderr)
            continue
        suite_rows = _rows(_run_suite(suite, mod, args))
        rows.extend(suite_rows)
        if suite_rows:
            render = getattr(mod, "table", None)
            body = (
                render(suite_rows) if render and suite != "core" else _tables(harness, suite_rows)
            )
            printed.append(f"### {suite}\n\n{body}")
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    if args.json == "-":
        json.dump({"machine": machine, "results": rows}, sys.stdout, indent=2)
        print()
    else:
        print(f"Machine: {machine}\n")
        print("\n\n".join(printed))
        if args.json:
            Path(args.json).write_text(json.dumps({"machine": machine, "results": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
