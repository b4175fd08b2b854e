"""What a new user meets first: the demo's screen, the CLI's help, the Makefile, the wheel.

The `wheel` test builds the wheel, installs it into a fresh venv in a
temporary directory (no checkout, no Rust toolchain on PATH) and runs every
command of `python -m rustasync` from there.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from rustasync import _demo, _demo_speed

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rustasync", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        check=False,
    )


# -- the demo's screen ---------------------------------------------------------------------------


def _fake_run(script, args, backend, fast):
    long = "Consumer 1 got element <377b1e8f82> in 0.00013 seconds. " * 4
    return _demo.Run(backend, 0, ["One", long, "Two"], "", 0.1, 3.0 if fast else None)


def _fake_workloads(scale: int = 1) -> list[_demo_speed.Workload]:
    def took(seconds: float):
        return lambda: seconds

    return [
        _demo_speed.Workload(
            "gather of 100,000 sleep(0.01)",
            {"asyncio.gather + asyncio.sleep": took(2.0), "rustasync.gather": took(0.1)},
        ),
        _demo_speed.Workload(
            "a thread feeding a loop, 200,000 items",
            {"asyncio.Queue + call_soon_threadsafe": took(1.0), "janus": took(2.0)},
        ),
    ]


@pytest.fixture
def fake_demo(monkeypatch):
    monkeypatch.setattr(_demo, "run_example", _fake_run)
    monkeypatch.setattr(_demo_speed, "workloads", _fake_workloads)


@pytest.mark.parametrize("rich", [True, False], ids=["rich", "plain"])
@pytest.mark.parametrize("width", [80, 120])
def test_demo_fits_the_terminal(fake_demo, monkeypatch, capsys, width, rich) -> None:
    if not rich:
        monkeypatch.setitem(sys.modules, "rich.console", None)  # import fails: plain text
    assert _demo.main(width=width) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    too_long = [line for line in lines if len(line) > width]
    assert not too_long, too_long
    assert "identical output" in out
    # Part 2's table: every implementation, its median and its speed-up.
    assert re.search(r"rustasync\.gather\s+0\.100 s\s+20\.0x", out), out
    assert re.search(r"janus\s+2\.000 s\s+0\.5x", out), out


def test_demo_skips_the_speed_when_an_output_differs(monkeypatch, capsys) -> None:
    def differs(script, args, backend, fast):
        return _demo.Run(backend, 0, ["One", backend], "", 0.1, 1.0)

    def never(scale: int = 1):
        raise AssertionError("the speed part ran")

    monkeypatch.setattr(_demo, "run_example", differs)
    monkeypatch.setattr(_demo_speed, "workloads", never)
    assert _demo.main(width=100) == 1
    captured = capsys.readouterr()
    assert "speed part is skipped" in captured.err


def test_demo_speed_bars_grow_with_the_ratio() -> None:
    bars = [_demo._bar(r, 100.0, 20) for r in (0.5, 1.0, 1.001, 2.0, 10.0, 100.0)]
    assert bars[0] == bars[1] == bars[2] == "▏"
    bars = bars[1:]
    assert len(bars[2]) < len(bars[3]) < len(bars[4]) == 20


def test_demo_speed_checks_results() -> None:
    """A workload whose result is wrong fails instead of reporting a time."""
    w = _demo_speed.Workload(
        "broken", {"a": lambda: 1.0, "b": _demo_speed._timed(lambda: (1, 0), 2)}
    )
    with pytest.raises(AssertionError, match="received"):
        list(_demo_speed.measure(w, 1))


def test_demo_speed_workloads_run_and_check_their_results() -> None:
    for w in _demo_speed.workloads(scale=100):
        names = list(_demo_speed.measure(w, 1))
        assert names == list(w.impls)
        assert all(t > 0 for t in w.times.values())


# -- the command line's help -----------------------------------------------------------------------


def test_run_without_a_script_names_only_what_is_required() -> None:
    out = cli("run")
    assert out.returncode == 2
    assert "required: SCRIPT" in out.stderr
    assert "ARGS" not in out.stderr.splitlines()[-1]


def test_bench_help_is_plain_text() -> None:
    out = cli("bench", "--help")
    assert out.returncode == 0
    assert "`" not in out.stdout
    assert "(default: 5)" in out.stdout


def test_stress_help_shows_the_defaults() -> None:
    out = cli("stress", "--help")
    assert out.returncode == 0
    for default in ("(default: 3.0)", "(default: 2)", "(default: both)", "(default: 0)"):
        assert default in out.stdout, default


def test_stress_totals_are_aligned() -> None:
    out = cli("stress", "--seconds", "0.3", "--threads", "1", "--loops", "1")
    assert out.returncode == 0, out.stderr
    totals = [line for line in out.stdout.splitlines() if line.startswith("  ")]
    columns = {line.rfind(" ") for line in totals}  # where the numbers start
    assert len(totals) > 5 and len(columns) == 1, out.stdout


# -- the Makefile ------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_help_aligns_every_description() -> None:
    out = subprocess.run(
        ["make", "-s", "help"], capture_output=True, text=True, cwd=ROOT, check=True
    ).stdout
    rows = [re.match(r"  (\S+)(\s+)\S", line) for line in out.splitlines()]
    assert rows and all(rows), out
    assert len({m.end() for m in rows if m}) == 1, out
    names = {m.group(1) for m in rows if m}
    assert {"demo", "test", "lint", "clean", "test-realtime", "test-wheel"} <= names


# -- the wheel, outside the checkout -----------------------------------------------------------

_SCRIPT = """\
import asyncio

async def main():
    q = asyncio.Queue()
    await asyncio.gather(q.put(1), asyncio.sleep(0.01))
    print(type(q).__module__, await q.get(), asyncio.sleep.__module__)

asyncio.run(main())
"""


def _without_rust(env: dict[str, str], venv_bin: Path) -> dict[str, str]:
    """PATH with the venv first and no directory that holds cargo or rustc."""
    keep = [
        d
        for d in env.get("PATH", "").split(os.pathsep)
        if d and not any((Path(d) / tool).exists() for tool in ("cargo", "rustc"))
    ]
    return {**env, "PATH": os.pathsep.join([str(venv_bin), *keep]), "PYTHONPATH": ""}


@pytest.mark.wheel
@pytest.mark.timeout(900)  # a fat-LTO build including async-nats: minutes on 2 busy cores
def test_wheel_in_a_fresh_venv_runs_every_command(tmp_path: Path) -> None:
    maturin = Path(sysconfig.get_path("scripts")) / "maturin"
    if not maturin.exists():
        pytest.skip("maturin is not installed (pip install maturin)")
    # A wheel that passes maturin's manylinux compliance check for this
    # machine's glibc (released wheels target manylinux_2_17 in CI).
    glibc = os.confstr("CS_GNU_LIBC_VERSION") if sys.platform == "linux" else None
    compat = []
    if glibc:
        major, minor = glibc.split()[1].split(".")[:2]
        compat = ["--compatibility", f"manylinux_{major}_{minor}"]
    wheels = tmp_path / "wheels"
    # The features of `make install`'s build, so that cargo reuses it instead
    # of a second fat-LTO build: the test hooks only add private functions.
    features = ["--features", "test-hooks"]
    build = subprocess.run(
        [str(maturin), "build", "--release", *features, "-i", sys.executable, *compat]
        + ["--out", str(wheels)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = wheels.glob("rustasync-*.whl")

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    bin_dir = env_dir / ("Scripts" if sys.platform == "win32" else "bin")
    python = bin_dir / "python"
    env = _without_rust(dict(os.environ), bin_dir)
    work = tmp_path / "elsewhere"
    work.mkdir()

    def run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(python), *args],
            capture_output=True,
            text=True,
            cwd=work,
            env=env,
            timeout=timeout,
            check=False,
        )

    pip = run("-m", "pip", "install", "--quiet", "--no-index", "--no-deps", str(wheel))
    assert pip.returncode == 0, pip.stderr
    where = run("-c", "import rustasync; print(rustasync.__file__)")
    assert str(env_dir) in where.stdout, where.stdout + where.stderr

    demo = run("-m", "rustasync", "demo", "--fast", "--width", "80")
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert demo.stdout.count(" yes") == len(_demo.EXAMPLES), demo.stdout
    assert "rustasync.gather + rustasync.sleep" in demo.stdout
    assert max(len(line) for line in demo.stdout.splitlines()) <= 80

    bench = run("-m", "rustasync", "bench", "--quick", "--rounds", "1")
    assert bench.returncode == 0, bench.stderr[-3000:]
    for suite in ("### core", "### queue", "### channel", "### bridge"):
        assert suite in bench.stdout

    stress = run("-m", "rustasync", "stress", "--seconds", "1")
    assert stress.returncode == 0, stress.stdout + stress.stderr
    assert re.search(r"discrepancies +0\n", stress.stdout), stress.stdout

    (work / "script.py").write_text(_SCRIPT)
    ran = run("-m", "rustasync", "run", "script.py")
    assert ran.returncode == 0, ran.stderr
    queue_module, got, sleep_module = ran.stdout.split()
    assert queue_module.startswith("rustasync.") and sleep_module.startswith("rustasync.")
    assert got == "1"
    stock = run("-m", "rustasync", "run", "--stock", "script.py")
    assert stock.stdout.split() == ["asyncio.queues", "1", "asyncio.tasks"]
