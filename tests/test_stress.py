"""`python -m rustasync stress`: threads of event loops full of queue, gather
and sleep traffic with cancellations and timeouts; every item accounted for."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def stress(*argv: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rustasync", "stress", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONFAULTHANDLER": "1"},
    )


def totals(stdout: str) -> dict[str, int]:
    out = {}
    for line in stdout.splitlines()[1:]:
        name, _, n = line.strip().rpartition(" ")
        out[name.strip()] = int(n)
    return out


def check(out: subprocess.CompletedProcess[str]) -> dict[str, int]:
    assert out.returncode == 0, out.stdout + out.stderr
    t = totals(out.stdout)
    assert t["discrepancies"] == 0
    assert t["items consumed"] == t["items produced"] + t["items from cancelled put_many"]
    # The run did real work of every kind.
    for name in ("puts", "gets", "gathers", "sleeps", "workers cancelled", "puts timed out"):
        assert t[name] > 0, name
    print(out.stdout)
    return t


def test_stress_three_seconds() -> None:
    check(stress("--seconds", "3", "--threads", "2", "--loops", "3", timeout=90))


@pytest.mark.soak
@pytest.mark.timeout(0)
def test_stress_soak() -> None:
    seconds = os.environ.get("RUSTASYNC_SOAK_SECONDS", "120")
    check(
        stress(
            "--seconds", seconds, "--threads", "4", "--loops", "20", timeout=float(seconds) * 3 + 60
        )
    )
