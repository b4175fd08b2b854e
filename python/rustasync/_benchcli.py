"""python -m rustasync bench: every benchmark, side by side with stock asyncio.

Suites: core (sleep and gather), queue (the queues against asyncio.Queue and
janus, culsans, aiologic when installed), channel (Channel, the Rust asyncq
engine, the Rust-future bridge), bridge (rustasync-bridge against
pyo3-async-runtimes: future_into_py and into_future), and, when named (--only
nats), nats (NatsChannel against nats-py on a nats-server it starts; several
minutes). Each suite validates its results before timing and reports medians
of interleaved rounds and the ratio stock (or peer) time / rustasync time
(above 1: rustasync is faster). The peers come with pip install
rustasync[bench].

--matrix runs the matrix instead: the queue, sleep and gather workloads with
rustasync and with stock asyncio code on asyncio's loop, uvloop and rloop,
and the queue peers, every cell a ratio to stock asyncio on asyncio's loop.
--pythons runs that matrix on several interpreters (all: every CPython 3.11+
found as python3.X on PATH or by pyenv), building rustasync for each from a
checkout into its own virtual environment (make bench-matrix); one Markdown
table per Python.
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

SUITES = ("core", "queue", "channel", "bridge", "nats")
# The broker comparison moves 1,000,000 messages per run through a real
# server: it runs when asked for by name.
DEFAULT_SUITES = ("core", "queue", "channel", "bridge")


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
        default=None,
        choices=["asyncio", "uvloop", "rloop"],
        help="event loops to run every workload on (default: asyncio; with --matrix, "
        "every one installed)",
    )
    p.add_argument(
        "--only",
        nargs="+",
        choices=SUITES,
        default=list(DEFAULT_SUITES),
        metavar="SUITE",
        help=f"suites to run, among {', '.join(SUITES)} (default: {', '.join(DEFAULT_SUITES)})",
    )
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON ('-' = stdout)")
    p.add_argument(
        "--matrix",
        action="store_true",
        help="the matrix of loops and peers (one table) instead of the suites",
    )
    p.add_argument(
        "--pythons",
        nargs="+",
        metavar="PYTHON",
        help="run the matrix on these interpreters ('all': every CPython 3.11+ found)",
    )
    p.add_argument(
        "--source",
        default=".",
        metavar="DIR",
        help="with --pythons: the checkout to build rustasync from (default: .)",
    )
    p.add_argument(
        "--envs",
        default=".venv-bench",
        metavar="DIR",
        help="with --pythons: where the per-Python venvs, wheels and builds go "
        "(default: .venv-bench)",
    )
    return p


def _rows(results: list[Any]) -> list[dict[str, Any]]:
    return [r.as_dict() if hasattr(r, "as_dict") else dict(r) for r in results]


def _suite_argv(suite: str, loop: str, args: argparse.Namespace) -> list[str]:
    """Translate the common options into a suite's own command line."""
    argv = ["--reps", str(args.rounds)] + (["--quick"] if args.quick else [])
    if suite == "queue":
        argv += ["--loop", loop]
    elif loop != "asyncio":
        argv.append(f"--{loop}")
    return argv


def _run_suite(suite: str, mod: Any, args: argparse.Namespace) -> list[Any]:
    """Run one suite on every requested loop."""
    if not hasattr(mod, "parse_args"):
        return list(mod.run(args))
    import asyncio

    out: list[Any] = []
    for loop in args.loops:
        if loop != "asyncio" and suite != "queue":
            # The channel suite makes its loops with asyncio.new_event_loop().
            asyncio.set_event_loop_policy(importlib.import_module(loop).EventLoopPolicy())
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


def _matrix(args: argparse.Namespace) -> int:
    from ._benchmarks import matrix

    if args.pythons:
        from ._benchmarks import pythons

        if args.pythons == ["all"]:
            found = pythons.discover()
        else:
            found = []
            for exe in args.pythons:
                info = pythons._probe(exe)
                if info is None:
                    _parser().error(f"--pythons: {exe} does not run, or cannot make a venv")
                found.append((f"{info[0][0]}.{info[0][1]}", info[2]))
        print("Pythons: " + ", ".join(f"{v} ({exe})" for v, exe in found), file=sys.stderr)
        child = ["--rounds", str(args.rounds)] + (["--quick"] if args.quick else [])
        if args.loops:
            child += ["--loops", *args.loops]
        results = pythons.run_all(found, Path(args.source), Path(args.envs), child)
    else:
        results = [matrix.run(args.loops, args.rounds, args.quick)]
    document = results if args.pythons else results[0]
    if args.json == "-":
        json.dump(document, sys.stdout, indent=2)
        print()
        return 0
    if args.json:
        Path(args.json).write_text(json.dumps(document, indent=2))
    print("\n\n".join(matrix.table(r) for r in results))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.rounds < 1:
        _parser().error("--rounds must be at least 1")
    if args.matrix or args.pythons:
        return _matrix(args)
    args.loops = args.loops or ["asyncio"]
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
