"""examples/bridge-user: a PyO3 extension of its own that depends on the
rustasync-bridge crate by path, as an outside project would. It is built
here with maturin (a debug build, target dir under target/, so repeated
runs are incremental) and imported from the wheel; every test runs on the
stock loop and on uvloop."""

from __future__ import annotations

import asyncio
import contextvars
import os
import shutil
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
CRATE = ROOT / "examples" / "bridge-user"

# The first build compiles pyo3 and tokio (about a minute on 2 busy cores).
pytestmark = pytest.mark.timeout(600)

var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")


@pytest.fixture(scope="session")
def bridge_user(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    """The example extension, built by maturin and imported from its wheel."""
    maturin = Path(sysconfig.get_path("scripts")) / "maturin"
    if not maturin.exists() or shutil.which("cargo") is None:
        pytest.skip("needs maturin (the test extra) and cargo")
    out = tmp_path_factory.mktemp("bridge-user")
    env = {
        **os.environ,
        "CARGO_TARGET_DIR": str(ROOT / "target" / "bridge-user"),
        "CARGO_PROFILE_DEV_DEBUG": "false",
    }
    build = subprocess.run(
        [str(maturin), "build", "--profile", "dev", "-i", sys.executable, "--out", str(out)]
        + ["-m", str(CRATE / "Cargo.toml")],
        capture_output=True,
        text=True,
        env=env,
        timeout=580,
    )
    assert build.returncode == 0, build.stderr[-4000:]
    (wheel,) = out.glob("bridge_user-*.whl")
    site = out / "site"
    with zipfile.ZipFile(wheel) as z:
        z.extractall(site)
    sys.path.insert(0, str(site))
    import bridge_user

    return bridge_user


async def settles(fn, want, timeout: float = 2.0) -> None:
    """Let the loop run until `fn() == want` (tokio tasks end on their own threads)."""
    deadline = time.monotonic() + timeout
    while fn() != want:
        assert time.monotonic() < deadline, (fn(), want)
        await asyncio.sleep(0.005)


def test_concurrent_tokio_timers(bridge_user, run):
    async def main():
        delays = [0.1, 0.05, 0.1, 0.1, 0.1]
        t0 = time.perf_counter()
        took = await bridge_user.sleep_all(delays)
        elapsed = time.perf_counter() - t0
        assert all(t >= d for t, d in zip(took, delays, strict=True))
        assert elapsed < 0.35, elapsed  # 0.45 s one after another

    run(main())


def test_blocking_computation_leaves_the_loop_running(bridge_user, run):
    async def main():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        t = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        assert await bridge_user.count_primes(2_000_000) == 148_933
        t.cancel()
        assert ticks > 1

    run(main())


def test_stream_of_items(bridge_user, run):
    async def main():
        before = bridge_user.live()
        assert [i async for i in bridge_user.ticks(5, 0.001)] == [0, 1, 2, 3, 4]
        # Leaving early drops the iterator, which stops its tokio task.
        it = bridge_user.ticks(1_000, 0.05)
        async for i in it:
            assert i == 0
            break
        assert bridge_user.live() == before + 1
        del it
        await settles(bridge_user.live, before)

    run(main())


def test_python_coroutines_awaited_from_rust(bridge_user, run):
    async def double(x):
        await asyncio.sleep(0.02)
        return (2 * x, var.get())

    async def main():
        var.set("caller's")
        t0 = time.perf_counter()
        got = await bridge_user.map_async(double, range(20))
        assert got == [(2 * x, "caller's") for x in range(20)]
        assert time.perf_counter() - t0 < 0.3  # all at once: not 20 x 0.02 s

    run(main())


def test_python_exception_cancels_the_calls_left(bridge_user, run):
    cancelled = []

    async def call(x):
        if x == 0:
            await asyncio.sleep(0.01)
            raise KeyError("first")
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append(x)
            raise

    async def main():
        with pytest.raises(KeyError, match="first"):
            await bridge_user.map_async(call, range(4))
        await settles(lambda: sorted(cancelled), [1, 2, 3])

    run(main())


def test_cancellation_reaches_the_rust_side(bridge_user, run):
    async def main():
        before = bridge_user.live()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(bridge_user.sleep_all([10, 10]), 0.05)
        await settles(bridge_user.live, before)
        task = asyncio.create_task(bridge_user.count_primes(10))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await settles(bridge_user.live, before)

    run(main())


def test_bad_arguments_raise_at_call_time(bridge_user, run):
    async def main():
        with pytest.raises(ValueError, match="non-negative"):
            bridge_user.sleep_all([0.1, -1])
        with pytest.raises(ValueError, match="non-negative"):
            bridge_user.ticks(3, float("nan"))

    run(main())
