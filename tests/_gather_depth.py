"""Chains of nested gathers, thousands deep.

Run as ``python _gather_depth.py IMPL LOOP SHAPE DEPTH`` (IMPL: asyncio or
rustasync; LOOP: asyncio or uvloop): builds a chain DEPTH levels deep, does
SHAPE to it, and prints one JSON line with what happened. The recursion
limit is raised as far as stock asyncio needs for the chain. Shapes:

- ``cancel``: ``gather(gather(... gather(fut)))``, cancelled through the Task
  that awaits it;
- ``cancel-tasks``: each level a Task whose coroutine awaits ``gather()`` of
  the next level, cancelled at the top;
- ``result``: the innermost future's result comes out at the top, in lists
  nested DEPTH deep;
- ``exception``: the innermost future's exception comes out at the top;
- ``free``: a finished chain, freed from its top;
- ``collect``: a chain in a reference cycle, freed by the collector.

test_gather_depth.py runs it in a subprocess, so that a crash (a C stack
overflow is a SIGSEGV) fails a test instead of killing pytest.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import sys
import weakref
from typing import Any

from _loops import loop_factory

import rustasync

GATHER = {"asyncio": asyncio.gather, "rustasync": rustasync.gather}


class Value:
    """The innermost result; a weak reference to it says when the chain is
    gone."""


def chain(gather: Any, inner: Any, depth: int) -> Any:
    for _ in range(depth):
        inner = gather(inner)
    return inner


async def level(gather: Any, n: int) -> Any:
    if n == 0:
        return await asyncio.sleep(3600)
    return await gather(level(gather, n - 1))


async def shape_of(gather: Any, shape: str, depth: int) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    if shape == "cancel":
        leaf = loop.create_future()
        top = asyncio.ensure_future(chain(gather, leaf, depth))
        await asyncio.sleep(0)
        accepted = top.cancel()
        try:
            await top
            outcome = "result"
        except asyncio.CancelledError:
            outcome = "CancelledError"
        return {"cancel": accepted, "outcome": outcome, "leaf cancelled": leaf.cancelled()}
    if shape == "cancel-tasks":
        top = loop.create_task(level(gather, depth))
        # Every level's Task starts one iteration after its parent's.
        for _ in range(depth + 2):
            await asyncio.sleep(0)
        try:
            accepted = top.cancel()
        except RecursionError:
            return {"cancel": "RecursionError"}
        try:
            await top
            outcome = "result"
        except asyncio.CancelledError:
            outcome = "CancelledError"
        return {"cancel": accepted, "outcome": outcome}
    if shape in ("result", "exception"):
        leaf = loop.create_future()
        top = chain(gather, leaf, depth)
        await asyncio.sleep(0)
        if shape == "exception":
            leaf.set_exception(ValueError("deep"))
            try:
                await top
            except ValueError as e:
                return {"outcome": repr(e)}
            return {"outcome": "result"}
        leaf.set_result("v")
        result = await top
        nesting = 0
        while isinstance(result, list):
            (result,) = result
            nesting += 1
        return {"nesting": nesting, "value": result}
    if shape in ("free", "collect"):
        value = Value()
        gone = weakref.ref(value)
        leaf = loop.create_future()
        top = chain(gather, leaf, depth)
        if shape == "collect":
            # The leaf's callbacks hold the chain, and the leaf the top.
            leaf.top = top
            leaf.value = value
        else:
            leaf.set_result(value)
            await top
        del value, leaf, top
        # The loop lets go of the callback that woke this Task once the
        # iteration is over.
        await asyncio.sleep(0)
        gc.collect()
        return {"freed": gone() is None}
    raise ValueError(shape)


def main() -> None:
    impl, loop_kind, shape, depth = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 3 * depth + 1000))
    factory = loop_factory(loop_kind)
    with asyncio.Runner(loop_factory=factory) as runner:
        report = runner.run(shape_of(GATHER[impl], shape, depth))
        print(json.dumps(report), flush=True)
        if report.get("cancel") == "RecursionError":
            # The chain is left half cancelled: skip the runner's teardown,
            # which would cancel it all over again.
            os._exit(0)


if __name__ == "__main__":
    main()
