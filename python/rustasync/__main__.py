"""python -m rustasync: run asyncio programs on rustasync, demo, bench, stress.

python -m rustasync run [--loop uvloop|rloop] [--virtual-time] SCRIPT.py [ARGS...]
python -m rustasync run [...] -m MODULE [ARGS...]
python -m rustasync demo [--real-time] [--fast] [--plot FILE.png]
python -m rustasync bench [--quick] [--loops asyncio uvloop rloop] [--pythons all] [...]
python -m rustasync stress [--seconds N] [...]
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Sequence

# Subcommands that hand all their arguments, --help included, to a module.
_FORWARDED = {
    "bench": ("rustasync._benchcli", "benchmarks against stock asyncio"),
    "stress": ("rustasync._stress", "stress and soak runs"),
}


def _parser() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    parser = argparse.ArgumentParser(
        prog="python -m rustasync",
        description="asyncio's sleep, gather and queues, implemented in Rust.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="run an unmodified asyncio program with rustasync's primitives",
        description=(
            "Run SCRIPT (or MODULE, with -m) as __main__ with its own ARGS, as python would, "
            "while asyncio.sleep, gather, Queue, LifoQueue and PriorityQueue are served by "
            "rustasync."
        ),
        usage="%(prog)s [-h] [--loop {asyncio,uvloop,rloop}] [--virtual-time] [--stock] "
        "(SCRIPT | -m MODULE) [ARGS ...]",
    )
    run.add_argument(
        "--loop",
        choices=("asyncio", "uvloop", "rloop"),
        default="asyncio",
        help="event loop the program's asyncio.run() and asyncio.new_event_loop() create "
        "(default: asyncio's own)",
    )
    run.add_argument(
        "--virtual-time",
        action="store_true",
        help="run on a virtual clock that jumps to the next timer instead of waiting; "
        "time.perf_counter() and friends keep real time",
    )
    run.add_argument(
        "--stock",
        action="store_true",
        help="leave asyncio's own primitives in place (to compare)",
    )
    run.add_argument(
        "-m",
        dest="module",
        action="store_true",
        help="SCRIPT is a module name: run it like python -m MODULE",
    )
    run.add_argument(
        "target", metavar="SCRIPT", nargs="?", help="the program's path (or module name with -m)"
    )
    run.add_argument(
        "args", nargs=argparse.REMAINDER, metavar="ARGS", help="the program's arguments"
    )

    demo = commands.add_parser(
        "demo",
        help="the main job: the tutorial's programs on both backends, then the speed",
        description="Part 1: run each of the tutorial's programs on stock asyncio and on "
        "rustasync and check that they print the same lines (in virtual time unless "
        "--real-time). Part 2, if they do: the same programs scaled up, on both, with a "
        "table of times and speed-ups. Exits with status 1 if any output differs.",
    )
    demo.add_argument(
        "--real-time",
        action="store_true",
        help="part 1 on the real clock (about 30 s: the programs sleep) instead of virtual time",
    )
    demo.add_argument(
        "--fast", action="store_true", help="part 2 on workloads ten times smaller, one round"
    )
    demo.add_argument(
        "--rounds", type=int, metavar="N", help="part 2: rounds per workload (default: 3)"
    )
    demo.add_argument(
        "--plot", metavar="FILE.png", help="also draw the speed-ups into FILE.png (matplotlib)"
    )
    demo.add_argument(
        "--examples", metavar="DIR", help="directory holding the examples (default: the package's)"
    )
    demo.add_argument("--width", type=int, help="terminal width (default: detected)")

    for name, (_module, summary) in _FORWARDED.items():
        commands.add_parser(name, help=summary, add_help=False)
    return parser, run


def _forward(command: str, argv: Sequence[str]) -> int:
    module_name, _summary = _FORWARDED[command]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        print(
            f"python -m rustasync {command}: not available in this build ({module_name} is missing)",
            file=sys.stderr,
        )
        return 2
    result = module.main(list(argv))
    return int(result or 0)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in _FORWARDED:
        return _forward(argv[0], argv[1:])
    parser, run_parser = _parser()
    ns = parser.parse_args(argv)
    if ns.command == "run":
        if ns.target is None:
            run_parser.error("the following argument is required: SCRIPT (or -m MODULE)")
        if ns.virtual_time and ns.loop != "asyncio":
            run_parser.error(
                f"--virtual-time needs the asyncio loop ({ns.loop}'s clock cannot be replaced)"
            )
        if ns.loop != "asyncio" and importlib.util.find_spec(ns.loop) is None:
            run_parser.error(f"--loop {ns.loop}: {ns.loop} is not installed")
        from . import _runner

        return _runner.main(
            ns.target,
            ns.args,
            module=ns.module,
            loop=ns.loop,
            virtual_time=ns.virtual_time,
            stock=ns.stock,
        )
    if ns.command == "demo":
        from . import _demo

        if ns.rounds is not None and ns.rounds < 1:
            parser.error("demo --rounds must be at least 1")
        return _demo.main(
            fast=ns.fast,
            real_time=ns.real_time,
            examples=ns.examples,
            width=ns.width,
            rounds=ns.rounds,
            plot=ns.plot,
        )
    parser.error(f"unknown command {ns.command!r}")
    return 2  # not reached: parser.error exits


if __name__ == "__main__":
    sys.exit(main())
