"""python -m rustasync demo: the tutorial's examples on stock asyncio and on rustasync.

Each example runs twice in a fresh interpreter, first with `--backend asyncio`
and then with `--backend rustasync`. The two outputs are shown side by side
(one after the other on a narrow terminal) and compared line by line, with
the numbers that measure time, and the random item names that asyncq.py
draws from os.urandom, masked. A table of times and verdicts closes the run;
the exit status is 1 if any output differs.

With `fast=True` the examples run on a `VirtualTimeLoop`: the same lines in
a fraction of the time. Their own stopwatches (time.perf_counter) then show
about 0 seconds, so the table reports the virtual clock instead.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from itertools import zip_longest
from pathlib import Path

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
    """The directory holding the examples: given, next to the sources, or ./examples."""
    if explicit:
        candidates = [Path(explicit)]
    else:
        candidates = [Path(__file__).resolve().parents[2] / "examples", Path.cwd() / "examples"]
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


def _cell(text: str, width: int) -> str:
    return text + " " * (width - _visible_len(text))


def _show_side_by_side(comparison: Comparison, width: int, out: list[str]) -> None:
    col = (width - 3) // 2
    a, b = comparison.runs
    out.append(_cell(f"--backend {a.backend}", col) + " | " + f"--backend {b.backend}")
    out.append("-" * col + "-+-" + "-" * col)
    for left, right in zip_longest(a.stdout, b.stdout):
        marker = (
            " | " if left is not None and right is not None and mask(left) == mask(right) else " * "
        )
        lefts = _wrap(left, col) if left is not None else []
        rights = _wrap(right, col) if right is not None else []
        for i, (lpiece, rpiece) in enumerate(zip_longest(lefts, rights, fillvalue="")):
            out.append(_cell(lpiece, col) + (marker if i == 0 else " | ") + rpiece)


def _show_one_after_the_other(comparison: Comparison, out: list[str]) -> None:
    for run in comparison.runs:
        out.append(f"--- {run.backend} ---")
        out.extend(run.stdout)


def _show(comparison: Comparison, width: int, colour: bool) -> None:
    lines = [f"=== {comparison.title} ==="]
    if width >= 2 * 40 + 3:
        _show_side_by_side(comparison, width, lines)
    else:
        _show_one_after_the_other(comparison, lines)
    for run in comparison.runs:
        if run.returncode or run.stderr:
            lines.append(f"--- {run.backend}: exit status {run.returncode}, stderr:")
            lines.extend(run.stderr.splitlines())
    lines.append("")
    text = "\n".join(lines)
    print(text if colour else _ANSI.sub("", text), flush=True)


def _seconds(run: Run, fast: bool) -> str:
    if not fast:
        return f"{run.wall:.2f}"
    if run.virtual is None:
        return f"- ({run.wall:.2f} real)"
    return f"{run.virtual:.2f} ({run.wall:.2f} real)"


def _table(comparisons: list[Comparison], fast: bool) -> None:
    clock = "virtual seconds" if fast else "seconds"
    header = ("script", f"asyncio, {clock}", f"rustasync, {clock}", "identical output")
    rows = [header]
    for comparison in comparisons:
        a, b = comparison.runs
        verdict = "yes" if comparison.same_output else "no"
        if fast and comparison.same_output and not comparison.same_virtual_time:
            verdict = "no (virtual time differs)"
        rows.append((comparison.title, _seconds(a, fast), _seconds(b, fast), verdict))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for n, row in enumerate(rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))


def main(*, fast: bool = False, examples: str | None = None, width: int | None = None) -> int:
    """Run the demo; returns the exit status (1 if any output differs)."""
    directory = find_examples(examples)
    if directory is None:
        where = examples or "next to the rustasync sources or in ./examples"
        print(f"python -m rustasync demo: cannot find the examples ({where})", file=sys.stderr)
        return 2
    width = width or shutil.get_terminal_size((100, 24)).columns
    colour = sys.stdout.isatty() and "NO_COLOR" not in os.environ
    comparisons = []
    for name, args in EXAMPLES:
        comparison = Comparison(name, args)
        for backend in BACKENDS:
            comparison.runs.append(run_example(directory / name, args, backend, fast))
        _show(comparison, width, colour)
        comparisons.append(comparison)
    _table(comparisons, fast)
    differs = [c for c in comparisons if not c.same_output or (fast and not c.same_virtual_time)]
    failed = [c for c in comparisons if any(run.returncode for run in c.runs)]
    return 1 if differs or failed else 0
