"""Objects that use a gather from inside the gather's own methods.

Run as ``python _gather_reentry.py IMPL LOOP`` (IMPL: asyncio or rustasync;
LOOP: asyncio or uvloop): each scenario makes an object whose ``__del__``, or
a callback, touches the gather that is dropping or calling it (``done()``,
``result()``, ``exception()``, ``add_done_callback``, ``remove_done_callback``,
``cancel()``, ``repr``). Prints one JSON line per scenario, flushed, so that a
scenario that never returns is the last one started: its outcome, and what
each touch saw while the loop ran (an object stock asyncio frees only with
its loop is not touched in time, and is not reported). test_gather.py runs it
in a subprocess, because a thread that deadlocks on its own lock while
attached to the interpreter cannot be interrupted in-process.
"""

from __future__ import annotations

import asyncio
import json
import sys
import types
from collections.abc import Awaitable, Callable
from typing import Any

from _loops import loop_factory

import rustasync

IMPLS = {
    "asyncio": types.SimpleNamespace(sleep=asyncio.sleep, gather=asyncio.gather),
    "rustasync": types.SimpleNamespace(sleep=rustasync.sleep, gather=rustasync.gather),
}

_busy = False


def touch(g: Any) -> dict[str, Any] | None:
    """Use every method of `g` once; what each gave (None once its loop is
    closed)."""
    global _busy
    if _busy:  # a touch that re-enters itself (cancel() below)
        return {"nested": True}
    if g.get_loop().is_closed():
        return None
    _busy = True
    try:
        out: dict[str, Any] = {"done": g.done(), "cancelled": g.cancelled()}
        for name in ("result", "exception"):
            try:
                r = getattr(g, name)()
            except BaseException as e:  # noqa: BLE001
                out[name] = type(e).__name__
            else:
                out[name] = r if r is None or isinstance(r, list) else type(r).__name__

        def cb(fut: Any) -> None:
            pass

        g.add_done_callback(cb)
        out["removed"] = g.remove_done_callback(cb)
        out["loop"] = g.get_loop() is asyncio.get_running_loop()
        out["repr"] = isinstance(repr(g), str)
        out["cancel"] = type(g.cancel()).__name__
        return out
    finally:
        _busy = False


async def outcome(g: Awaitable[Any]) -> Any:
    try:
        return await g
    except BaseException as e:  # noqa: BLE001
        return type(e).__name__


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def cancel_drops_value(delay: float, hops: int) -> Callable[[Any], Awaitable[Any]]:
    """`cancel()` drops a sleep child's value, whose `__del__` touches the
    gather (stock drops it when the child's Task ends, an iteration later)."""

    async def scenario(impl: Any) -> Any:
        seen: list[Any] = []
        g: Any = None

        class Value:
            def __del__(self) -> None:
                if (t := touch(g)) is not None:
                    seen.append(t)

        g = impl.gather(impl.sleep(delay, Value()), impl.sleep(10))
        for _ in range(hops):
            await asyncio.sleep(0)
        accepted = g.cancel()
        res = await outcome(g)
        await settle()
        return (accepted, res), seen

    return scenario


async def remove_drops_callback(impl: Any) -> Any:
    """`remove_done_callback` drops a callback whose `__del__` touches the gather."""
    seen: list[Any] = []
    g = impl.gather(impl.sleep(0.001, 1))

    class Callback:
        def __call__(self, fut: Any) -> None:
            seen.append("called")

        def __eq__(self, other: object) -> bool:
            return other == "key"

        __hash__ = object.__hash__

        def __del__(self) -> None:
            seen.append(touch(g))

    g.add_done_callback(Callback())
    removed = g.remove_done_callback("key")
    res = await outcome(g)
    await settle()
    return (removed, res), seen


async def done_callback_touches(impl: Any) -> Any:
    """A done-callback uses the gather that calls it."""
    seen: list[Any] = []
    g = impl.gather(impl.sleep(0, 1), impl.sleep(0.001, 2))
    g.add_done_callback(lambda f: seen.append(touch(f)))
    res = await outcome(g)
    await settle()
    return res, seen


async def failed_done_callback_touches(impl: Any) -> Any:
    """The same for a gather that failed."""
    seen: list[Any] = []

    async def fail() -> None:
        raise KeyError("k")

    g = impl.gather(fail(), impl.sleep(0.001, 2))
    g.add_done_callback(lambda f: seen.append(touch(f)))
    await settle()
    res = await outcome(g)
    await settle()
    return res, seen


async def child_cancel_touches(impl: Any) -> Any:
    """A child future whose `cancel()` touches the gather cancelling it."""
    seen: list[Any] = []
    g: Any = None

    class Child(asyncio.Future):
        def cancel(self, msg: Any = None) -> bool:
            seen.append(touch(g))
            return super().cancel(msg=msg)

    child = Child(loop=asyncio.get_running_loop())
    g = impl.gather(impl.sleep(10), child, impl.sleep(0))
    await asyncio.sleep(0)
    accepted = g.cancel()
    res = await outcome(g)
    return (accepted, res), seen


async def result_drops_traceback(impl: Any) -> Any:
    """`result()` replaces the exception's traceback (asyncio raises it once
    with the one it was stored with, then with none), dropping a frame whose
    local's `__del__` touches the gather."""
    seen: list[Any] = []
    g: Any = None

    class Local:
        def __del__(self) -> None:
            if (t := touch(g)) is not None:
                seen.append(t)

    def fail() -> None:
        local = Local()  # noqa: F841 - kept alive by the traceback's frame
        raise KeyError("k")

    child = asyncio.get_running_loop().create_future()
    try:
        fail()
    except KeyError as e:
        child.set_exception(e)
    g = impl.gather(child)
    await settle()
    raised = []
    for fut in (child, g, g):
        try:
            fut.result()
        except KeyError as e:
            raised.append(type(e).__name__)
    return raised, seen


SCENARIOS: dict[str, Callable[[Any], Awaitable[Any]]] = {
    "cancel drops a starting sleep(0)'s value": cancel_drops_value(0, 0),
    "cancel drops a yielded sleep(0)'s value": cancel_drops_value(0, 1),
    "cancel drops a waiting sleep's value": cancel_drops_value(10, 1),
    "remove_done_callback drops a callback": remove_drops_callback,
    "a done-callback touches the gather": done_callback_touches,
    "a done-callback touches the failed gather": failed_done_callback_touches,
    "a child's cancel() touches the gather": child_cancel_touches,
    "result() drops a traceback": result_drops_traceback,
}


def main(impl_name: str, loop_kind: str) -> None:
    impl = IMPLS[impl_name]
    factory: Callable[[], asyncio.AbstractEventLoop] = loop_factory(loop_kind)
    for name, scenario in SCENARIOS.items():
        print(json.dumps({"start": name}), flush=True)
        with asyncio.Runner(loop_factory=factory) as runner:
            result, touches = runner.run(scenario(impl))
        print(json.dumps({"name": name, "outcome": result, "touches": touches}), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
