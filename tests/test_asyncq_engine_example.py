"""examples/asyncq.py --engine rust: the simulation as tokio tasks."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "asyncq.py"


def test_rust_engine_every_item_produced_and_consumed_once():
    out = subprocess.run(
        [sys.executable, str(EXAMPLE), "-p", "4", "-c", "6", "--engine", "rust", "--zero-sleep"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    added = Counter(re.findall(r"Producer \d+ added <([0-9a-f]{10})> to queue\.", out))
    got = Counter(
        re.findall(r"Consumer \d+ got element <([0-9a-f]{10})> in \d+\.\d{5} seconds\.", out)
    )
    assert added and added == got
    assert out.rstrip().splitlines()[-1].startswith("Program completed in ")


def test_rust_engine_seed_reproduces_items():
    def items(seed):
        out = subprocess.run(
            [
                sys.executable,
                str(EXAMPLE),
                "-p",
                "3",
                "-c",
                "2",
                "--engine",
                "rust",
                "--zero-sleep",
                "--seed",
                str(seed),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        return sorted(re.findall(r"added <([0-9a-f]{10})>", out))

    assert items(7) == items(7)
    assert items(7) != items(8)
