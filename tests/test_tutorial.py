"""The tutorial's programs, unmodified, on stock asyncio and through `python -m rustasync run`.

Each program prints what happens in the order it happens, so identical lines
in identical order mean that rustasync's sleep, gather and queues scheduled
everything exactly as asyncio's do. Measured times are masked in the line
comparison and compared separately, with a tolerance.

asyncq.py names its items with os.urandom(), which no seed reaches; both
sides run it through tests/fixtures/reproducible.py, which makes os.urandom
reproducible without touching the script's own random.seed(444) sequence.

The real-time runs take a minute or two and are marked `realtime`; the
virtual-time runs give the same lines in well under a second each and run
by default. tests/fixtures/golden/ holds what stock asyncio printed for each
program in real time.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from _programs import (
    CASES,
    EXAMPLES,
    TUTORIAL,
    Case,
    assert_queue_delivered_everything,
    assert_same_timings,
    finish,
    golden,
    masked,
    python,
    reported_elapsed,
    start,
    virtual,
)

from rustasync import _demo

IDS = [str(case).replace(" ", "") for case in CASES]


# -- virtual time (default) -----------------------------------------------------------------


WELL_DEFINED = [case for case in CASES if case.golden]
WELL_DEFINED_IDS = [str(case).replace(" ", "") for case in WELL_DEFINED]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_run_in_virtual_time_prints_what_stock_asyncio_prints(case: Case) -> None:
    stock = virtual(case, "asyncio")
    ours = virtual(case, "rustasync")
    assert stock.returncode == 0, stock.stderr
    assert ours.returncode == 0, ours.stderr
    assert masked(ours.lines) == masked(stock.lines)
    assert stock.clocks == ours.clocks == [case.elapsed]
    if case.script == "asyncq.py":
        assert_queue_delivered_everything(ours.lines)


@pytest.mark.parametrize("case", WELL_DEFINED, ids=WELL_DEFINED_IDS)
def test_virtual_time_keeps_the_real_time_order(case: Case) -> None:
    out = virtual(case, "asyncio")
    assert out.returncode == 0, out.stderr
    assert masked(out.lines) == masked(golden(case))


def test_run_virtual_time_from_the_command_line() -> None:
    case = CASES[1]  # chained.py 9 6 3
    out = python("-m", "rustasync", "run", "--virtual-time", *case.argv, timeout=60)
    assert out.returncode == 0, out.stderr
    assert masked(out.lines) == masked(golden(case))
    # The program's own stopwatch (time.perf_counter) is not virtual.
    assert reported_elapsed(out.lines) is not None
    assert reported_elapsed(out.lines) < 1.0


# -- real time --------------------------------------------------------------------------------


@pytest.mark.realtime
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_run_prints_what_stock_asyncio_prints(case: Case) -> None:
    # Both at once: the programs spend their time asleep.
    stock = start(*case.argv)
    ours = start("-m", "rustasync", "run", *case.argv)
    stock_out, ours_out = finish(stock), finish(ours)
    assert stock_out.returncode == 0, stock_out.stderr
    assert ours_out.returncode == 0, ours_out.stderr
    if case.golden:
        assert masked(ours_out.lines) == masked(stock_out.lines)
        assert_same_timings(stock_out.lines, ours_out.lines)
        assert masked(stock_out.lines) == masked(golden(case))
    else:
        # Real time orders simultaneous wake-ups by jitter; check what holds anyway.
        for out in (stock_out, ours_out):
            assert_queue_delivered_everything(out.lines)
        assert_same_timings(stock_out.lines[-1:], ours_out.lines[-1:])
    for out in (stock_out, ours_out):
        elapsed = reported_elapsed(out.lines)
        if elapsed is not None:
            assert abs(elapsed - case.elapsed) <= 0.05 * case.elapsed + 0.05


@pytest.mark.realtime
def test_run_on_uvloop_prints_what_stock_asyncio_prints() -> None:
    case = CASES[2]  # asyncq.py -p 2 -c 5
    out = python("-m", "rustasync", "run", "--loop", "uvloop", *case.argv)
    assert out.returncode == 0, out.stderr
    assert masked(out.lines) == masked(golden(case))
    assert_same_timings(golden(case), out.lines)


# -- the ported examples ------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("backend", ["asyncio", "rustasync"])
def test_example_prints_what_the_tutorial_prints(case: Case, backend: str) -> None:
    """The ported example, either backend, prints the original's lines (in virtual time)."""
    argv = case.argv_for(EXAMPLES / case.script, "--backend", backend)
    out = python("-m", "rustasync", "run", "--stock", "--virtual-time", *argv, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = [line.replace(str(EXAMPLES) + "/", "") for line in out.lines]
    assert masked(lines) == masked(virtual(case, "asyncio").lines)


def test_countsync_example_prints_what_the_tutorial_prints() -> None:
    fixture = python(str(TUTORIAL / "countsync.py"), timeout=60)
    example = python(str(EXAMPLES / "countsync.py"), "--backend", "rustasync", timeout=60)
    assert example.returncode == fixture.returncode == 0, example.stderr
    lines = [line.replace(str(EXAMPLES) + "/", "") for line in example.lines]
    assert masked(lines) == masked(fixture.lines)
    assert_same_timings(fixture.lines, lines)


def test_examples_reject_an_unknown_backend() -> None:
    out = python(str(EXAMPLES / "countasync.py"), "--backend", "trio", timeout=60)
    assert out.returncode == 2
    assert "invalid choice" in out.stderr


# -- the demo -----------------------------------------------------------------------------------


def test_demo_fast_shows_identical_output() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "rustasync", "demo", "--fast", "--width", "120"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    table = proc.stdout.split("identical output")[-1]
    for script, _args in _demo.EXAMPLES:
        assert script in table
    assert table.count(" yes") == len(_demo.EXAMPLES)
    assert " no" not in table


def test_demo_exits_nonzero_when_an_output_differs(monkeypatch, capsys) -> None:
    def fake(script, args, backend, fast):
        lines = ["One", "Two" if backend == "asyncio" else "Three"]
        return _demo.Run(backend, 0, lines, "", 0.1, 1.0 if fast else None)

    monkeypatch.setattr(_demo, "run_example", fake)
    assert _demo.main(fast=True, width=100) == 1
    out = capsys.readouterr().out
    assert "Two" in out and "Three" in out
    assert out.rstrip().endswith("no")


def test_demo_masks_timings_and_random_items() -> None:
    a = "Consumer 1 got element <377b1e8f82> in 0.00013 seconds."
    b = "Consumer 1 got element <06c055b3ab> in 0.00021 seconds."
    assert _demo.mask(a) == _demo.mask(b)
    assert _demo.mask("sleeping for 4 seconds.") != _demo.mask("sleeping for 5 seconds.")


def test_demo_wraps_coloured_lines_without_bleeding_colour() -> None:
    line = "\033[36m" + "x" * 25 + "\033[0m"
    pieces = _demo._wrap(line, 10)
    assert [_demo._visible_len(p) for p in pieces] == [10, 10, 5]
    assert all(p.startswith("\033[36m") and p.endswith("\033[0m") for p in pieces)


def test_demo_without_examples_says_so(capsys) -> None:
    assert _demo.main(examples="/nonexistent") == 2
    assert "cannot find the examples" in capsys.readouterr().err
