"""The event loops the tests run on: asyncio's own, and uvloop and rloop when
installed (both are in the test extra where they have wheels).

``RUSTASYNC_TEST_LOOPS=asyncio,rloop`` (comma-separated) runs the
loop-parametrised tests on those loops only.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import os
from collections.abc import Callable

ALL_KINDS = ("asyncio", "uvloop", "rloop")


def _installed(kind: str) -> bool:
    return kind == "asyncio" or importlib.util.find_spec(kind) is not None


def _chosen() -> list[str]:
    wanted = os.environ.get("RUSTASYNC_TEST_LOOPS", "")
    if not wanted:
        return [k for k in ALL_KINDS if _installed(k)]
    kinds = [k.strip() for k in wanted.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in ALL_KINDS or not _installed(k)]
    if unknown:
        raise RuntimeError(f"RUSTASYNC_TEST_LOOPS: {unknown} unknown or not installed")
    return kinds


LOOP_KINDS = _chosen()


def _rloop() -> Callable[[], asyncio.AbstractEventLoop]:
    import rloop

    class RLoop(rloop.RLoop):  # type: ignore[misc,name-defined]
        """rloop's loop, without the ResourceWarning its signal wake-up socket
        pair raises on every run that asyncio.Runner makes in the main thread
        (stock asyncio's code alike): rloop 0.5 closes both fds from Rust, then
        drops the Python socket objects still open, which warn (and close the
        same fd numbers again). Detaching them first leaves the fds to rloop."""

        def _ssock_stop(self) -> None:
            socks = (self._ssock_r, self._ssock_w)
            super()._ssock_stop()
            for s in socks:
                s.detach()

    return RLoop


def loop_factory(kind: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """The `new_event_loop` of the given loop kind (each module has one)."""
    if kind == "asyncio":
        return asyncio.new_event_loop
    if kind == "rloop":
        return _rloop()
    return importlib.import_module(kind).new_event_loop  # type: ignore[no-any-return]


def new_loop(kind: str) -> asyncio.AbstractEventLoop:
    """A new event loop of the given kind."""
    return loop_factory(kind)()


# For the scripts the tests run in subprocesses: the same choice, by name.
SUBPROCESS_FACTORY = (
    "import asyncio, importlib\n"
    "def loop_factory(kind):\n"
    "    if kind == 'asyncio':\n"
    "        return asyncio.new_event_loop\n"
    "    return importlib.import_module(kind).new_event_loop\n"
)


# What rloop (0.5) does differently from asyncio's loop and uvloop, where the
# difference shows through rustasync's tests. Each was checked against stock
# asyncio's own primitives on rloop, which behave the same way; docs/running.md
# lists them.
RLOOP_INFINITE_TIMER = (
    "rloop runs a call_at/call_later callback at once when its delay overflows "
    "rloop's microsecond clock (math.inf, 1e300), so sleep(math.inf) returns at "
    "once, asyncio's and rustasync's alike"
)
RLOOP_HANDLER_SIGNATURE = (
    "rloop calls a handler set with loop.set_exception_handler() as "
    "handler(context), not handler(loop, context)"
)
RLOOP_CLOSE_KEEPS_CALLBACKS = (
    "rloop's close() keeps the readers, timers and callbacks it holds (and the "
    "loop is not collectable then): rustasync learns that a loop closed when "
    "the loop lets go of rustasync's reader, so wake-ups for tasks of a closed "
    "rloop loop are never returned, and a closed loop's pending sleeps are "
    "never freed (asyncio.sleep's alike)"
)


def skip_on_rloop(loop_kind: str, reason: str) -> None:
    """Skip the calling test on rloop, for a difference listed above."""
    if loop_kind == "rloop":
        import pytest

        pytest.skip(reason)
