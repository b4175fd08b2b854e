"""Nested gathers: deep chains, and the order in which nested cancels run.

Deep chains (tests/_gather_depth.py, one subprocess per run, so that a C
stack overflow fails a test instead of killing pytest): 10,000 nested
gathers cancelled, completed and failed, 100,000 freed and collected, on
stock asyncio and rustasync, on the stock loop and uvloop, with the
recursion limit raised as far as stock needs.

Order: cancelling a tree of gathers, Tasks that await gathers, futures and
sleeps calls every `cancel()` in the same order on both implementations,
with the same answers, and everything ends the same way.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from _programs import env
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

DEPTH = 10_000
CANCELLED = {"cancel": True, "outcome": "CancelledError"}


def depth_run(impl: str, loop_kind: str, shape: str, depth: int) -> dict[str, Any]:
    """What tests/_gather_depth.py reports for SHAPE at DEPTH."""
    import json

    proc = subprocess.run(
        [sys.executable, str(Path(__file__).parent / "_gather_depth.py")]
        + [impl, loop_kind, shape, str(depth)],
        capture_output=True,
        text=True,
        env=env(),
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, f"exit status {proc.returncode}\n{proc.stderr[-3000:]}"
    return json.loads(proc.stdout)


def test_cancel_deep_chain(impl, loop_kind):
    """`gather(gather(... gather(fut)))` 10,000 deep, cancelled: stock's
    cancel recurses in Python, within the raised recursion limit (regression:
    rustasync recursed in Rust, about 1 KiB of C stack a level, and crashed
    at about 7,000)."""
    got = depth_run(impl.name, loop_kind, "cancel", DEPTH)
    assert got == {**CANCELLED, "leaf cancelled": True}


@pytest.mark.parametrize("depth", [300, DEPTH])
def test_cancel_deep_chain_of_tasks(impl, loop_kind, depth):
    """Each level a Task awaiting `gather()` of the next: cancelling it is a C
    recursion in stock (Task.cancel() cancels the gather it waits on). Stock's
    limit is its C stack on 3.11 (about 13,000 levels in 8 MiB) and its C
    recursion limit on 3.12+ (`RecursionError` at about 500 levels on
    3.12.1, 3,300 on 3.13); rustasync has none (regression: it crashed at
    about 6,000 levels)."""
    got = depth_run(impl.name, loop_kind, "cancel-tasks", depth)
    if impl.name == "asyncio" and depth > 300 and sys.version_info >= (3, 12):
        assert got in (CANCELLED, {"cancel": "RecursionError"})
    else:
        assert got == CANCELLED


def test_result_of_deep_chain(impl, loop_kind):
    assert depth_run(impl.name, loop_kind, "result", DEPTH) == {"nesting": DEPTH, "value": "v"}


def test_exception_of_deep_chain(impl, loop_kind):
    assert depth_run(impl.name, loop_kind, "exception", DEPTH) == {"outcome": "ValueError('deep')"}


@pytest.mark.parametrize("shape", ["free", "collect"])
def test_deep_chain_is_freed(impl, loop_kind, shape):
    """A finished chain 100,000 deep freed from its top, or a pending one
    in a reference cycle collected: CPython frees stock's nested gathers
    through its trashcan (regression: freeing rustasync's recursed, one
    deallocation inside the other, and crashed at about 25,000)."""
    assert depth_run(impl.name, loop_kind, shape, 100_000) == {"freed": True}


# -- The order of nested cancels ------------------------------------------


class Recorder(asyncio.Future):
    """A future that notes each `cancel()` call and its answer."""

    def __init__(self, name: str, trace: list, *, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop=loop)
        self.name = name
        self.trace = trace

    def cancel(self, msg: Any = None) -> bool:
        accepted = super().cancel(msg=msg)
        self.trace.append(("cancel", self.name, msg, accepted))
        return accepted


class SubTask(asyncio.Task):
    """A Task subclass: its `cancel()` is not necessarily asyncio's."""


def outcome(fut: Any) -> Any:
    if fut.cancelled():
        return "cancelled"
    exc = fut.exception()
    if exc is not None:
        return (type(exc).__name__, str(exc))
    result = fut.result()
    return [outcome_of_value(v) for v in result] if isinstance(result, list) else result


def outcome_of_value(v: Any) -> Any:
    if isinstance(v, BaseException):
        return (type(v).__name__, str(v))
    return [outcome_of_value(x) for x in v] if isinstance(v, list) else v


class Tree:
    """Builds a tree of nested awaitables for one implementation, naming
    every node, and notes in `trace` each node's end and each recorder's
    cancel."""

    def __init__(self, impl: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.impl = impl
        self.loop = loop
        self.trace: list = []
        self.nodes: list[tuple[str, Any]] = []
        self.leaves: list[Recorder] = []

    def name(self, kind: str) -> str:
        return f"{kind}{len(self.nodes)}"

    def watch(self, name: str, fut: Any) -> Any:
        self.nodes.append((name, fut))
        fut.add_done_callback(lambda f: self.trace.append(("done", name, outcome(f))))
        return fut

    def build(self, node: tuple) -> Any:
        kind = node[0]
        if kind == "leaf":
            name = self.name("leaf")
            f = Recorder(name, self.trace, loop=self.loop)
            self.leaves.append(f)
            if node[1] == "done":
                f.set_result(name)
            elif node[1] == "failed":
                f.set_exception(KeyError(name))
            return self.watch(name, f)
        if kind == "sleep":
            return self.impl.sleep(0, "slept")
        if kind == "gather":
            _, children, return_exceptions, repeat = node
            args = [self.build(c) for c in children]
            if repeat:
                args.append(args[0])
            name = self.name("gather")
            return self.watch(name, self.impl.gather(*args, return_exceptions=return_exceptions))
        # A Task (or a Task subclass) whose coroutine awaits the child.
        inner = self.build(node[1])

        async def body() -> Any:
            return await inner

        name = self.name(kind)
        task_type = SubTask if kind == "subtask" else asyncio.Task
        return self.watch(name, task_type(body(), loop=self.loop))


leaf = st.sampled_from(["pending", "done", "failed"]).map(lambda s: ("leaf", s))
trees = st.recursive(
    st.one_of(leaf, st.just(("sleep",))),
    lambda children: st.one_of(
        st.tuples(
            st.just("gather"),
            st.lists(children, min_size=1, max_size=3),
            st.booleans(),
            st.booleans(),
        ),
        st.tuples(st.sampled_from(["task", "task", "subtask"]), children),
    ),
    max_leaves=10,
)


async def cancel_tree(impl: Any, node: tuple, msg: Any) -> list:
    """Build `node` under a gather, let every Task reach its `await`, cancel
    the top, then let everything end; the trace."""
    loop = asyncio.get_running_loop()
    tree = Tree(impl, loop)
    top = tree.build(("gather", [node], False, False))
    for _ in range(12):
        await asyncio.sleep(0)
    tree.trace.append(("top.cancel", top.cancel(msg)))
    for _ in range(12):
        await asyncio.sleep(0)
    # Leaves under a gather that was done already were not cancelled.
    for f in tree.leaves:
        f.cancel("end")
    for _ in range(12):
        await asyncio.sleep(0)
    tree.trace.append(
        ("tasks", [(n, t.cancelling()) for n, t in tree.nodes if isinstance(t, asyncio.Task)])
    )
    tree.trace.append(("left", [n for n, f in tree.nodes if not f.done()]))
    return tree.trace


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(tree=trees, msg=st.sampled_from([None, "stop"]))
def test_nested_cancels_run_in_stock_order(loop_factory, tree, msg):
    """Gathers of gathers, of Tasks awaiting gathers (where rustasync does
    not recurse through the Task), of Task subclasses (where it does), of
    futures and sleeps: the same `cancel()` calls in the same order, the
    same answers, the same ends, in the same order."""
    import rustasync

    traces = []
    for gather, sleep in ((asyncio.gather, asyncio.sleep), (rustasync.gather, rustasync.sleep)):
        impl = type("Impl", (), {"gather": staticmethod(gather), "sleep": staticmethod(sleep)})
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            traces.append(runner.run(cancel_tree(impl, tree, msg)))
    assert traces[1] == traces[0]


def test_nested_cancels_through_tasks_in_stock_order(impl, run):
    """A chain of Tasks awaiting gathers, with a recorder beside each level:
    each level's recorder is cancelled before the next level's, as stock's
    recursion does, and each Task is asked once."""

    async def main():
        loop = asyncio.get_running_loop()
        trace: list = []

        async def level(n):
            if n == 0:
                return await Recorder("bottom", trace, loop=loop)
            return await impl.gather(Recorder(f"before{n}", trace, loop=loop), level(n - 1))

        top = loop.create_task(level(20))
        for _ in range(25):
            await asyncio.sleep(0)
        trace.append(top.cancel())
        try:
            await top
        except asyncio.CancelledError:
            trace.append("cancelled")
        return trace

    names = [f"before{n}" for n in range(20, 0, -1)] + ["bottom"]
    assert run(main()) == [("cancel", n, None, True) for n in names] + [True, "cancelled"]


def test_cancel_cycle_raises_recursion_error(impl, run):
    """A Task awaiting a gather that it is a child of: stock's cancel
    recurses between the two until RecursionError; so does rustasync's
    (it finds the cycle). Nothing is left broken: failing another child
    still ends both."""

    async def main():
        loop = asyncio.get_running_loop()
        other = loop.create_future()
        holder: dict[str, Any] = {}

        async def body():
            await asyncio.sleep(0)
            return await holder["gather"]

        task = loop.create_task(body())
        holder["gather"] = g = impl.gather(task, other)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        try:
            g.cancel()
            raised = None
        except RecursionError:
            raised = "RecursionError"
        other.set_exception(KeyError("other"))
        try:
            await task
        except KeyError:
            pass
        return raised, g.done(), task.done()

    assert run(main()) == ("RecursionError", True, True)
