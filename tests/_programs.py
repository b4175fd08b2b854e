"""Running the tutorial's programs in subprocesses, and comparing what they print."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import rustasync

FIXTURES = Path(__file__).parent / "fixtures"
TUTORIAL = FIXTURES / "tutorial"
GOLDEN = FIXTURES / "golden"
# Runs a script with os.urandom made reproducible (see the file's docstring).
REPRODUCIBLE = FIXTURES / "reproducible.py"
EXAMPLES = Path(__file__).parents[1] / "examples"

_NUMBER = re.compile(r"\d+\.\d+")

# Runs a program on a virtual clock through the library API and records the
# final clock reading of every loop it created.
_VIRTUAL_DRIVER = """\
import json, sys
from rustasync._runner import run_path
report, primitives, script, *args = sys.argv[1:]
loops = run_path(script, args, virtual_time=True, stock=primitives == "asyncio")
with open(report, "w") as f:
    json.dump([loop.time() for loop in loops], f)
"""


@dataclass(frozen=True)
class Case:
    """A tutorial program and the command line the tutorial gives it."""

    script: str
    args: tuple[str, ...]
    # What stock asyncio prints in real time, where that is well defined.
    golden: str | None
    # The program's running time: the sum of its sleeps, in seconds.
    elapsed: float

    @property
    def argv(self) -> list[str]:
        """The program to hand to python, with os.urandom reproducible where needed."""
        return self.argv_for(TUTORIAL / self.script)

    def argv_for(self, script: Path, *extra: str) -> list[str]:
        """The same for another copy of the program, with extra arguments."""
        target = [str(script), *self.args, *extra]
        return [str(REPRODUCIBLE), *target] if self.script == "asyncq.py" else target

    def __str__(self) -> str:
        return " ".join((self.script, *self.args))


CASES = (
    Case("countasync.py", (), "countasync.out", 1.0),
    Case("chained.py", ("9", "6", "3"), "chained-9-6-3.out", 11.0),
    Case("asyncq.py", ("-p", "2", "-c", "5"), "asyncq-p2-c5.out", 29.0),
    Case("rand.py", (), "rand.out", 12.0),
    # With 100 consumers, many sleeps end at the same instant, and which of
    # them real time runs first is down to scheduling jitter: two stock runs
    # already differ. Its lines are compared in virtual time only.
    Case("asyncq.py", ("-p", "5", "-c", "100"), None, 53.0),
)


@dataclass
class Output:
    returncode: int
    lines: list[str]
    stderr: str
    clocks: list[float] | None = None


def env() -> dict[str, str]:
    """The environment for a child interpreter: it imports the rustasync we test."""
    environ = dict(os.environ)
    source = str(Path(rustasync.__file__).resolve().parents[1])
    environ["PYTHONPATH"] = os.pathsep.join(p for p in (source, environ.get("PYTHONPATH")) if p)
    return environ


def python(*argv: str, timeout: float = 300, cwd: str | Path | None = None) -> Output:
    """Run `python ARGV...` and collect what it printed."""
    proc = subprocess.run(
        [sys.executable, *argv],
        capture_output=True,
        text=True,
        env=env(),
        timeout=timeout,
        cwd=cwd,
        check=False,
    )
    return Output(proc.returncode, normalise(proc.stdout), proc.stderr)


def start(*argv: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env(),
    )


def finish(proc: subprocess.Popen[str], timeout: float = 300) -> Output:
    stdout, stderr = proc.communicate(timeout=timeout)
    return Output(proc.returncode, normalise(stdout), stderr)


def virtual(case: Case, primitives: str) -> Output:
    """Run `case` on a virtual clock with asyncio's or rustasync's primitives."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "clocks.json"
        out = python("-c", _VIRTUAL_DRIVER, str(report), primitives, *case.argv)
        if report.exists():
            out.clocks = json.loads(report.read_text())
    return out


def normalise(stdout: str) -> list[str]:
    """The printed lines, with the fixtures' directory dropped from paths."""
    return stdout.replace(str(TUTORIAL) + os.sep, "").splitlines()


def masked(lines: list[str]) -> list[str]:
    """Lines with the measured times (any decimal number) masked."""
    return [_NUMBER.sub("#", line) for line in lines]


def golden(case: Case) -> list[str]:
    """What stock asyncio prints for `case` in real time (timings vary)."""
    assert case.golden is not None, f"{case} has no well-defined real-time output"
    return (GOLDEN / case.golden).read_text().splitlines()


_ADDED = re.compile(r"Producer \d+ added <(\w+)> to queue\.")
_GOT = re.compile(r"Consumer \d+ got element <(\w+)> in")


def assert_queue_delivered_everything(lines: list[str]) -> None:
    """asyncq.py: every item put is got exactly once, after it was put."""
    added: set[str] = set()
    got: set[str] = set()
    for line in lines:
        if m := _ADDED.match(line):
            assert m[1] not in added, line
            added.add(m[1])
        elif m := _GOT.match(line):
            assert m[1] in added and m[1] not in got, line
            got.add(m[1])
    assert got == added
    assert added


def assert_same_timings(expected: list[str], actual: list[str]) -> None:
    """Each measured time within 5% + 50 ms of the other run's."""
    for want, got in zip(expected, actual, strict=True):
        for a, b in zip(_NUMBER.findall(want), _NUMBER.findall(got), strict=True):
            x, y = float(a), float(b)
            assert abs(x - y) <= 0.05 * max(x, y) + 0.05, f"{want!r} vs {got!r}"


def reported_elapsed(lines: list[str]) -> float | None:
    """The program's own total running time, from its last line, if it prints one."""
    found = _NUMBER.findall(lines[-1]) if lines else []
    return float(found[-1]) if found else None
