"""The Tasks rustasync creates (a gather's coroutine children) as asyncio's
introspection sees them, against the Tasks stock gather creates: the task
factory and the keyword arguments it receives, eager tasks (3.12+),
`all_tasks()` and `current_task()`, and the call graph (3.14+).

Each test runs one body on stock asyncio and on rustasync, on the loop under
test, and compares what they saw.
"""

from __future__ import annotations

import asyncio
import re
import sys
import types
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from conftest import IMPLS

Body = Callable[[types.SimpleNamespace], Coroutine[Any, Any, Any]]


def both(run: Callable[..., Any], body: Body) -> tuple[Any, Any]:
    """What `body` returns with stock asyncio's primitives, then rustasync's."""
    return run(body(IMPLS["asyncio"])), run(body(IMPLS["rustasync"]))


def test_children_come_from_the_task_factory_with_the_same_arguments(run) -> None:
    """gather makes its children with `loop.create_task(coro)`, as stock's
    `ensure_future` does: a task factory sees the same calls, keyword
    arguments included (3.11 adds `context` only when one is given; 3.13+
    pass on what `create_task` got, `eager_start` on 3.14)."""

    async def body(impl: types.SimpleNamespace) -> Any:
        seen: list[tuple[str, list[str]]] = []

        def factory(loop: Any, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
            seen.append((coro.__qualname__.rsplit(".", 1)[-1], sorted(kwargs)))
            return asyncio.Task(coro, loop=loop, **kwargs)

        async def child(i: int) -> int:
            await impl.sleep(0)
            return i

        asyncio.get_running_loop().set_task_factory(factory)
        try:
            got = await impl.gather(child(1), child(2), child(3))
        finally:
            asyncio.get_running_loop().set_task_factory(None)
        return got, seen

    stock, rust = both(run, body)
    assert stock[0] == [1, 2, 3]
    assert rust == stock


def test_children_are_in_all_tasks_and_are_current_in_their_coroutine(run) -> None:
    async def body(impl: types.SimpleNamespace) -> Any:
        release = asyncio.Event()
        inside: list[bool] = []

        async def child(i: int) -> int:
            me = asyncio.current_task()
            inside.append(me is not None and me in asyncio.all_tasks() and not me.done())
            await release.wait()
            return i

        me = asyncio.current_task()
        fut = impl.gather(*(child(i) for i in range(3)))
        await asyncio.sleep(0)
        others = [t for t in asyncio.all_tasks() if t is not me]
        names = sorted(t.get_coro().__qualname__.rsplit(".", 1)[-1] for t in others)
        kinds = {type(t) for t in others}
        release.set()
        got = await fut
        after = [t for t in asyncio.all_tasks() if t is not me]
        return got, names, kinds, inside, after

    stock, rust = both(run, body)
    assert stock[0] == [0, 1, 2]
    assert stock[1] == ["child"] * 3
    assert rust == stock


@pytest.mark.skipif(sys.version_info < (3, 12), reason="asyncio.eager_task_factory is new in 3.12")
def test_eager_children(run) -> None:
    """With `asyncio.eager_task_factory`, children run to their first
    suspension inside gather(); those that finish there are done before it
    returns."""
    refused = run(_eager_factory_refused())
    if refused:
        # Seen: uvloop 0.23 on Python 3.13.0 passes eager_start= to the task
        # factory, which that Python's asyncio.eager_task_factory refuses.
        pytest.skip(f"this loop's create_task and asyncio.eager_task_factory do not fit: {refused}")

    async def body(impl: types.SimpleNamespace) -> Any:
        order: list[str] = []

        async def quick(i: int) -> int:
            order.append(f"quick {i}")
            return i

        async def slow(i: int) -> int:
            order.append(f"slow {i} starts")
            await impl.sleep(0)
            order.append(f"slow {i} ends")
            return i

        asyncio.get_running_loop().set_task_factory(asyncio.eager_task_factory)
        try:
            fut = impl.gather(quick(1), slow(2), quick(3))
            order.append("gather returned")
            got = await fut
            all_quick = impl.gather(quick(4), quick(5))
            done_at_once = all_quick.done()
            got2 = await all_quick
        finally:
            asyncio.get_running_loop().set_task_factory(None)
        return got, got2, order, done_at_once

    stock, rust = both(run, body)
    assert stock[0] == [1, 2, 3] and stock[1] == [4, 5]
    assert stock[2][:4] == ["quick 1", "slow 2 starts", "quick 3", "gather returned"]
    assert rust == stock


async def _eager_factory_refused() -> str | None:
    """The TypeError the running loop's create_task gives with asyncio's
    eager task factory, if any (stock asyncio code alike)."""
    loop = asyncio.get_running_loop()
    loop.set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined]
    coro = asyncio.sleep(0)
    try:
        await loop.create_task(coro)
    except TypeError as e:
        coro.close()
        return str(e)
    finally:
        loop.set_task_factory(None)
    return None


def _shape(graph: Any) -> tuple[Any, ...]:
    """A call graph with task names and function names, without addresses."""
    fut = graph.future
    name = fut.get_name() if isinstance(fut, asyncio.Task) else type(fut).__name__
    name = re.sub(r"^Task-\d+$", "Task-N", name)
    frames = tuple(
        getattr(entry.frame, "f_code", None) and entry.frame.f_code.co_name
        for entry in graph.call_stack
    )
    return (name, frames, tuple(sorted(_shape(a) for a in graph.awaited_by)))


@pytest.mark.skipif(
    sys.version_info < (3, 14),
    reason="asyncio.capture_call_graph is new in Python 3.14 (not the running interpreter)",
)
def test_call_graph_of_a_child_shows_the_task_awaiting_the_gather(run) -> None:
    async def body(impl: types.SimpleNamespace) -> Any:
        graphs: list[Any] = []

        async def leaf() -> None:
            await impl.sleep(0)
            graphs.append(_shape(asyncio.capture_call_graph()))  # type: ignore[attr-defined]

        async def parent() -> None:
            # One child made by gather, one given to it as a Task.
            await impl.gather(leaf(), asyncio.create_task(leaf(), name="leaf"))

        await asyncio.create_task(parent(), name="parent")
        return sorted(graphs)

    stock, rust = both(run, body)
    assert [g[0] for g in stock] == ["Task-N", "leaf"]
    assert all([a[0] for a in g[2]] == ["parent"] for g in stock)
    assert rust == stock


_RECORDING_CALL_GRAPH = """
import asyncio, asyncio.futures, json, sys
calls = []
# Stand-ins for Python 3.14's bookkeeping, installed before gather first runs.
asyncio.futures.future_add_to_awaited_by = lambda f, t: calls.append(("add", f.get_name(), t.get_name()))
asyncio.futures.future_discard_from_awaited_by = lambda f, t: calls.append(("discard", f.get_name(), t.get_name()))
import rustasync

async def parent():
    a = asyncio.create_task(asyncio.sleep(0, 1), name="a")
    b = asyncio.create_task(asyncio.sleep(0.01, 2), name="b")
    return await rustasync.gather(a, b, a)

async def main():
    out = await asyncio.create_task(parent(), name="parent")
    calls.append(("outside", await rustasync.gather(asyncio.create_task(asyncio.sleep(0), name="c"))))
    return out

print(json.dumps([asyncio.run(main()), calls]))
"""


@pytest.mark.skipif(
    sys.version_info >= (3, 14), reason="Python 3.14+ runs the real bookkeeping (test above)"
)
def test_children_are_recorded_as_awaited_by_the_calling_task() -> None:
    """What 3.14's gather records, checked here with stand-in functions: each
    child not done yet, once, as awaited by the calling task, and forgotten
    when it is done; a child made outside any task is not recorded."""
    import json
    import subprocess

    out = subprocess.run(
        [sys.executable, "-c", _RECORDING_CALL_GRAPH],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    result, calls = json.loads(out.stdout)
    assert result == [1, 2, 1]
    assert calls == [
        ["add", "a", "parent"],
        ["add", "b", "parent"],
        ["discard", "a", "parent"],
        ["discard", "b", "parent"],
        ["add", "c", "Task-1"],
        ["discard", "c", "Task-1"],
        ["outside", [None]],
    ]
