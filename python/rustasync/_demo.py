"""python -m rustasync demo: first the same output, then the speed.

Part 1: each of the tutorial's examples runs in a fresh interpreter with
`--backend asyncio` and with `--backend rustasync`; the outputs are compared
line by line, with the numbers that measure time, and the random item names
that asyncq.py draws from os.urandom, masked. By default the examples run on
a `VirtualTimeLoop` (the same lines in a fraction of the time; the table
reports the virtual clock, since the programs' own stopwatches read about
0 s); `real_time=True` runs them on the real clock, all at once, since they
spend their time asleep. The tutorial's programs are sleep-bound, so their
times are equal on both backends by design.

Part 2, only when every output is identical: the same programs scaled up
until the machinery is what takes the time (see `_demo_speed`), with a
progress display, a table of times and ratios and a bar chart of the ratios.

The exit status is 1 if any output differs or a run fails.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import zip_longest
from pathlib import Path
from typing import Any

from ._examples import DIRECTORY as _PACKAGED_EXAMPLES

__all__ = ["EXAMPLES", "main", "mask"]

# The tutorial's scripts and the arguments it runs them with.
EXAMPLES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("countasync.py", ()),
    ("countsync.py", ()),
    ("rand.py", ()),
    ("chained.py", ("9", "6", "3")),
    ("asyncq.py", ("-p", "2", "-c", "5")),
)
BACKENDS = ("asyncio", "rustasync")

_TIMING = re.compile(r"\d+\.\d+")
_RANDOM_ITEM = re.compile(r"<[0-9a-f]{10}>")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_RESET = "\x1b[0m"

# Runs an example on a virtual clock and records the clock's final reading.
_VIRTUAL_DRIVER = """\
import json, sys
from rustasync._runner import run_path
report, script, *args = sys.argv[1:]
loops = run_path(script, args, virtual_time=True, stock=True)
with open(report, "w") as f:
    json.dump([loop.time() for loop in loops], f)
"""


def mask(line: str) -> str:
    """A line with what legitimately varies between runs replaced by placeholders."""
    line = _TIMING.sub("#.##", line)
    return _RANDOM_ITEM.sub("<item>", line)


@dataclass
class Run:
    """One example run under one backend."""

    backend: str
    returncode: int
    stdout: list[str]
    stderr: str
    wall: float
    virtual: float | None = None


@dataclass
class Comparison:
    script: str
    args: tuple[str, ...]
    runs: list[Run] = field(default_factory=list)

    @property
    def title(self) -> str:
        return " ".join((self.script, *self.args))

    @property
    def same_output(self) -> bool:
        a, b = self.runs
        return a.returncode == b.returncode and [mask(x) for x in a.stdout] == [
            mask(x) for x in b.stdout
        ]

    @property
    def same_virtual_time(self) -> bool:
        a, b = self.runs
        return a.virtual == b.virtual


def find_examples(explicit: str | None = None) -> Path | None:
    """The directory holding the examples: the one given, or the package's own."""
    candidates = [Path(explicit)] if explicit else [_PACKAGED_EXAMPLES]
    for candidate in candidates:
        if all((candidate / name).is_file() for name, _args in EXAMPLES):
            return candidate
    return None


def _child_env() -> dict[str, str]:
    """The environment for the examples: they import this very rustasync."""
    env = dict(os.environ)
    here = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
    return env


def run_example(script: Path, args: tuple[str, ...], backend: str, fast: bool) -> Run:
    argv = [*args, "--backend", backend]
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "clock.json"
        if fast:
            cmd = [sys.executable, "-c", _VIRTUAL_DRIVER, str(report), str(script), *argv]
        else:
            cmd = [sys.executable, str(script), *argv]
        began = time.perf_counter()
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env=_child_env(), timeout=600, check=False
        )
        wall = time.perf_counter() - began
        virtual = None
        if fast and report.exists():
            clocks = json.loads(report.read_text())
            virtual = clocks[-1] if clocks else None
    return Run(backend, proc.returncode, proc.stdout.splitlines(), proc.stderr, wall, virtual)


# -- display ----------------------------------------------------------------------------------


def _visible_len(text: str) -> int:
    return len(_ANSI.sub("", text))


def _wrap(line: str, width: int) -> list[str]:
    """Cut `line` into pieces of at most `width` visible characters, colours carried over."""
    pieces: list[str] = []
    current, visible, colour, used_colour = "", 0, "", False
    for token in re.split(r"(\x1b\[[0-9;]*m)", line):
        if _ANSI.fullmatch(token):
            current += token
            colour = "" if token == _RESET else token
            used_colour = True
            continue
        for char in token:
            if visible == width:
                pieces.append(current + (_RESET if used_colour else ""))
                current, visible = colour, 0
            current += char
            visible += 1
    pieces.append(current + (_RESET if used_colour else ""))
    return pieces


def _clip(line: str, width: int) -> str:
    """`line` cut to `width` visible characters, an ellipsis marking the cut."""
    if _visible_len(line) <= width:
        return line
    return _wrap(line, width - 1)[0] + "…"


def _cell(text: str, width: int) -> str:
    return text + " " * (width - _visible_len(text))


def _side_by_side(comparison: Comparison, width: int) -> list[str]:
    """Both outputs in two columns, `*` marking the lines that differ; long lines clipped."""
    col = (width - 3) // 2
    a, b = comparison.runs
    out = [_cell(f"--backend {a.backend}", col) + " | " + f"--backend {b.backend}"]
    out.append("-" * col + "-+-" + "-" * col)
    for left, right in zip_longest(a.stdout, b.stdout):
        same = left is not None and right is not None and mask(left) == mask(right)
        out.append(
            _cell(_clip(left or "", col), col)
            + (" | " if same else " * ")
            + _clip(right or "", col)
        )
    return out


def _one_after_the_other(comparison: Comparison, width: int) -> list[str]:
    out = []
    for run in comparison.runs:
        out.append(f"--- {run.backend} ---")
        out.extend(_clip(line, width) for line in run.stdout)
    return out


def _outputs(comparison: Comparison, width: int, colour: bool) -> str:
    lines = [f"=== {comparison.title} ==="]
    if width >= 2 * 40 + 3:
        lines += _side_by_side(comparison, width)
    else:
        lines += _one_after_the_other(comparison, width)
    for run in comparison.runs:
        if run.returncode or run.stderr:
            lines.append(f"--- {run.backend}: exit status {run.returncode}, stderr:")
            lines.extend(_clip(line, width) for line in run.stderr.splitlines())
    text = "\n".join(lines) + "\n"
    return text if colour else _ANSI.sub("", text)


def _seconds(run: Run, virtual: bool) -> str:
    if not virtual:
        return f"{run.wall:.2f}"
    if run.virtual is None:
        return f"- / {run.wall:.2f}"
    return f"{run.virtual:.2f} / {run.wall:.2f}"


def _verdict(comparison: Comparison, virtual: bool) -> str:
    if any(run.returncode for run in comparison.runs):
        return "no (a run failed)"
    if not comparison.same_output:
        return "no"
    if virtual and not comparison.same_virtual_time:
        return "no (virtual time differs)"
    return "yes"


def _bar(ratio: float, top: float, width: int) -> str:
    """A bar for `ratio` on a log scale where `top` fills `width` cells."""
    if ratio <= 1 or top <= 1:
        return "▏"
    eighths = max(1, round(8 * width * math.log(ratio) / math.log(top)))
    return "█" * (eighths // 8) + ("", "▏", "▎", "▍", "▌", "▋", "▊", "▉")[eighths % 8]


class _Screen:
    """Headings, tables and progress: drawn by rich when it is installed, as plain text if not."""

    def __init__(self, width: int | None) -> None:
        try:
            from rich.console import Console
        except ImportError:
            self.console: Any = None
            self.width = width or shutil.get_terminal_size((100, 24)).columns
            self.colour = sys.stdout.isatty() and "NO_COLOR" not in os.environ
        else:
            self.console = Console(width=width, highlight=False, soft_wrap=False)
            self.width = self.console.width
            self.colour = self.console.is_terminal and not self.console.no_color

    def heading(self, title: str, note: str) -> None:
        if self.console is not None:
            from rich.text import Text

            self.console.print()
            self.console.rule(Text(title, style="bold"), align="left")
            self.console.print(Text(note, style="dim"))
        else:
            print(f"\n== {title} ==", flush=True)
            for paragraph in note.splitlines():
                print(textwrap.fill(paragraph, self.width - 1), flush=True)

    def text(self, text: str) -> None:
        if self.console is not None:
            from rich.text import Text

            self.console.print(Text.from_ansi(text.rstrip("\n")), overflow="crop", no_wrap=True)
        else:
            print(text, end="", flush=True)

    def table(
        self,
        header: Sequence[str],
        rows: Sequence[Sequence[str]],
        right: Sequence[int] = (),
        sections: Sequence[int] = (),
    ) -> None:
        """`rows` under `header`; columns numbered in `right` aligned right; a rule before
        each row numbered in `sections`."""
        if self.console is not None:
            from rich import box
            from rich.table import Table

            table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
            for i, name in enumerate(header):
                table.add_column(name, justify="right" if i in right else "left", no_wrap=True)
            for i, row in enumerate(rows):
                table.add_row(*row, end_section=i + 1 in sections)
            self.console.print(table, overflow="crop")
            return
        widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]

        def line(row: Sequence[str]) -> str:
            cells = (
                cell.rjust(w) if i in right else cell.ljust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
            return "  ".join(cells).rstrip()

        print(line(header))
        print("  ".join("-" * w for w in widths))
        for i, row in enumerate(rows):
            if i and i in sections:
                print()
            print(line(row))
        sys.stdout.flush()

    def progress(self, total: int) -> _Progress:
        return _Progress(self, total)


class _Progress:
    """A live progress bar on a terminal (rich), one line per step elsewhere."""

    def __init__(self, screen: _Screen, total: int) -> None:
        self.screen, self.total, self.done = screen, total, 0
        self.live: Any = None
        if screen.console is not None and screen.console.is_terminal:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
            )

            self.live = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(bar_width=None),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=screen.console,
                transient=True,
            )
            self.task = self.live.add_task("", total=total)

    def __enter__(self) -> _Progress:
        if self.live is not None:
            self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.stop()

    def step(self, description: str) -> None:
        """A step starts: show what runs now, and how much is done."""
        if self.live is not None:
            self.live.update(self.task, description=description, completed=self.done)
        else:
            line = f"  [{self.done + 1}/{self.total}] {description}"
            print(_clip(line, self.screen.width - 1), flush=True)
        self.done += 1

    def finish(self) -> None:
        if self.live is not None:
            self.live.update(self.task, completed=self.total)


# -- part 1: the same output ------------------------------------------------------------------


def _same_output(screen: _Screen, directory: Path, virtual: bool) -> list[Comparison]:
    comparisons = [Comparison(name, args) for name, args in EXAMPLES]
    jobs = [(c, backend) for c in comparisons for backend in BACKENDS]
    # On the real clock the programs sleep, so they all run at once; on the
    # virtual clock they compute, so as many at a time as there are cores.
    workers = len(jobs) if not virtual else max(1, min(len(jobs), os.cpu_count() or 1))
    results: dict[tuple[int, str], Run] = {}
    with screen.progress(len(jobs)) as progress, ThreadPoolExecutor(workers) as pool:
        futures = {
            pool.submit(run_example, directory / c.script, c.args, backend, virtual): (i, backend)
            for i, (c, backend) in enumerate(jobs)
        }
        for c, backend in jobs:
            progress.step(f"{c.title} on {backend}")
        for future, (i, backend) in futures.items():
            results[i, backend] = future.result()
        progress.finish()
    for i, (c, backend) in enumerate(jobs):
        run = results[i, backend]
        # The count scripts print their own path: show it relative to the examples.
        run.stdout = [line.replace(f"{directory}{os.sep}", "") for line in run.stdout]
        c.runs.append(run)
    for c in comparisons:
        if _verdict(c, virtual) != "yes":
            screen.text(_outputs(c, screen.width, screen.colour))
    rows = [
        (
            c.title,
            _seconds(c.runs[0], virtual),
            _seconds(c.runs[1], virtual),
            str(len(c.runs[1].stdout)),
            _verdict(c, virtual),
        )
        for c in comparisons
    ]
    screen.table(
        ("script", "asyncio", "rustasync", "lines", "identical output"),
        rows,
        right=(3,),
    )
    return comparisons


# -- part 2: the speed ------------------------------------------------------------------------


def _speed(screen: _Screen, scale: int, rounds: int, plot: str | None) -> None:
    from . import _demo_speed

    workloads = _demo_speed.workloads(scale)
    steps = sum(len(w.impls) for w in workloads) * rounds
    with screen.progress(steps) as progress:
        for w in workloads:
            for name in _demo_speed.measure(w, rounds):
                progress.step(f"{w.title}: {name}")
        progress.finish()
    top = max(10.0, *(w.ratio(name) for w in workloads for name in w.impls))
    bar_width = max(8, min(30, screen.width - 66))
    rows: list[tuple[str, str, str, str]] = []
    sections = []
    for w in workloads:
        if rows:
            sections.append(len(rows))
        rows.append((w.title, "", "", ""))
        for name in w.impls:
            ratio = w.ratio(name)
            rows.append(
                (
                    f"  {name}",
                    f"{w.times[name]:.3f} s",
                    f"{ratio:.1f}x",
                    _bar(ratio, top, bar_width),
                )
            )
    screen.table(("workload, implementation", "median", "speed-up", ""), rows, right=(1, 2))
    if plot:
        _plot(workloads, plot)


def _plot(workloads: list[Any], path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"--plot {path}: matplotlib is needed (pip install matplotlib)", file=sys.stderr)
        return
    labels, ratios = [], []
    for w in workloads:
        for name in w.impls:
            labels.append(f"{w.title}\n{name}")
            ratios.append(w.ratio(name))
    fig, ax = plt.subplots(figsize=(9, 0.55 * len(labels) + 1))
    ax.barh(range(len(labels)), ratios, color="tab:orange")
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("speed-up over the first implementation of each workload (log scale)")
    ax.set_title("rustasync demo: the tutorial's programs, scaled up")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"chart written to {path}")


# -- main ---------------------------------------------------------------------------------------


def main(
    *,
    fast: bool = False,
    real_time: bool = False,
    examples: str | None = None,
    width: int | None = None,
    rounds: int | None = None,
    plot: str | None = None,
    speed: bool = True,
) -> int:
    """Run the demo; returns the exit status (1 if any output differs or a run fails).

    `fast`: the speed part on workloads ten times smaller, one round each.
    """
    directory = find_examples(examples)
    if directory is None:
        where = examples or "in the package"
        print(f"python -m rustasync demo: cannot find the examples ({where})", file=sys.stderr)
        return 2
    virtual = not real_time
    screen = _Screen(width)
    screen.heading(
        "Part 1: the tutorial's programs print the same lines on both backends",
        (
            "Virtual time: sleeps take no real time and the order of events is kept; "
            "times are virtual seconds / real seconds."
            if virtual
            else "Real time: every program sleeps for real (they all run at once); "
            "times in seconds."
        )
        + " These programs are sleep-bound, so their times match by design:"
        " part 2 shows the speed.",
    )
    comparisons = _same_output(screen, directory, virtual)
    if any(_verdict(c, virtual) != "yes" for c in comparisons):
        print("the outputs differ: the speed part is skipped", file=sys.stderr)
        return 1
    if speed:
        scale, default_rounds = (10, 1) if fast else (1, 3)
        screen.heading(
            "Part 2: the same programs, scaled up until the machinery takes the time",
            "Every result is checked before its time counts; medians of "
            f"{rounds or default_rounds} interleaved round(s). Speed-up: the time of the "
            "first row of each workload / this row's time.\n"
            "More workloads, other loops, peers: python -m rustasync bench",
        )
        _speed(screen, scale, rounds or default_rounds, plot)
    return 0
