import asyncio

import pytest

try:
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None

LOOP_KINDS = ["asyncio"] + (["uvloop"] if uvloop else [])


def new_loop(kind: str) -> asyncio.AbstractEventLoop:
    return uvloop.new_event_loop() if kind == "uvloop" else asyncio.new_event_loop()


@pytest.fixture(params=LOOP_KINDS)
def loop_kind(request) -> str:
    return request.param


@pytest.fixture
def run(loop_kind):
    """Run a coroutine to completion on a fresh loop of the parametrised kind."""

    def runner(coro):
        with asyncio.Runner(loop_factory=lambda: new_loop(loop_kind)) as r:
            return r.run(coro)

    return runner
