"""Shared fixtures: every behaviour test runs against stock asyncio and
rustasync (``impl``), on the stock loop, uvloop and rloop (``loop_kind``, ``run``;
tests/_loops.py chooses the loops)."""

from __future__ import annotations

import asyncio
import os
import types
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from _loops import LOOP_KINDS as LOOP_KINDS
from _loops import new_loop as new_loop
from hypothesis import settings

import rustasync

# HYPOTHESIS_PROFILE=thorough: many more examples for the property tests
# that size themselves from it (test_cancellation.py).
settings.register_profile("thorough", max_examples=1000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

IMPLS = {
    "asyncio": types.SimpleNamespace(name="asyncio", sleep=asyncio.sleep, gather=asyncio.gather),
    "rustasync": types.SimpleNamespace(
        name="rustasync", sleep=rustasync.sleep, gather=rustasync.gather
    ),
}


@pytest.fixture(params=list(IMPLS))
def impl(request: pytest.FixtureRequest) -> types.SimpleNamespace:
    """The implementation under test: stock asyncio or rustasync."""
    return IMPLS[request.param]


@pytest.fixture(params=LOOP_KINDS)
def loop_kind(request: pytest.FixtureRequest) -> str:
    """The event loop kind under test."""
    return request.param


@pytest.fixture
def loop_factory(loop_kind: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """A factory for the event loop kind under test."""
    return lambda: new_loop(loop_kind)


@pytest.fixture
def run(loop_factory: Callable[[], asyncio.AbstractEventLoop]) -> Callable[..., Any]:
    """Run a coroutine to completion on a fresh loop of the kind under test."""

    def _run(coro: Coroutine[Any, Any, Any]) -> Any:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            return runner.run(coro)

    return _run


def pytest_terminal_summary(terminalreporter) -> None:
    """Print the counters the tests kept (bad inputs tried, faults injected)."""
    from _tally import TALLY

    for name, n in sorted(TALLY.items()):
        terminalreporter.write_line(f"{name}: {n}")
