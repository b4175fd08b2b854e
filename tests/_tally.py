"""Counters the test modules add to and the session prints at the end
(see `pytest_terminal_summary` in conftest.py)."""

from __future__ import annotations

from collections import Counter

TALLY: Counter[str] = Counter()
