"""Shared fixtures: every behaviour test runs against stock asyncio and
rustasync (``impl``), on the stock loop and on uvloop (``run``)."""

from __future__ import annotations

import asyncio
import types
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

import rustasync

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is a test dependency
    uvloop = None

IMPLS = {
    "asyncio": types.SimpleNamespace(name="asyncio", sleep=asyncio.sleep, gather=asyncio.gather),
    "rustasync": types.SimpleNamespace(
        name="rustasync", sleep=rustasync.sleep, gather=rustasync.gather
    ),
}

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "stockloop": asyncio.new_event_loop,
}
if uvloop is not None:
    LOOPS["uvloop"] = uvloop.new_event_loop


@pytest.fixture(params=list(IMPLS))
def impl(request: pytest.FixtureRequest) -> types.SimpleNamespace:
    """The implementation under test: stock asyncio or rustasync."""
    return IMPLS[request.param]


@pytest.fixture(params=list(LOOPS))
def loop_factory(request: pytest.FixtureRequest) -> Callable[[], asyncio.AbstractEventLoop]:
    """A factory for the event loop kind under test."""
    return LOOPS[request.param]


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
