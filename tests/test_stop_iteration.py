"""The StopIteration a finished rustasync awaitable raises behaves as the one
asyncio's own awaitables raise (a done Future's ``__await__``), whatever the
implementation does to make it cheap: nothing half-built is reachable, a
tracer (pdb) sees a plain StopIteration and keeps nothing alive, the handled
exception becomes its ``__context__``, and it pickles and prints as one."""

from __future__ import annotations

import asyncio
import copy
import gc
import pickle
import sys
import traceback
import types
import weakref
from collections.abc import Iterator
from typing import Any

import pytest
from queue_impls import IMPLS as QUEUE_IMPLS

import rustasync


class Item:
    pass


def _ready(impl: types.SimpleNamespace, value: Any) -> Iterator[Any]:
    """An awaitable's iterator whose first ``next()`` finishes with ``value``."""
    if impl.name == "asyncio":
        loop = asyncio.new_event_loop()
        try:
            fut = loop.create_future()
            fut.set_result(value)
            return fut.__await__()
        finally:
            loop.close()
    q = rustasync.Queue()
    q.put_nowait(value)
    return q.get().__await__()


def _finish(it: Iterator[Any]) -> StopIteration:
    try:
        next(it)
    except StopIteration as e:
        return e
    raise AssertionError("the awaitable did not finish")


def _null_tuples() -> int:
    gc.collect()
    return sum(
        1 for o in gc.get_objects() if type(o) is tuple and len(o) == 1 and repr(o) == "(<NULL>,)"
    )


@pytest.mark.parametrize("qimpl", list(QUEUE_IMPLS.values()), ids=lambda q: q.name)
def test_no_half_built_tuple_after_awaits(qimpl, run) -> None:
    async def main() -> None:
        q = qimpl.Queue()
        for _ in range(3):
            q.put_nowait(Item())
            await q.get()
        q.put_nowait((1, 2))
        assert await q.get() == (1, 2)

    run(main())
    assert _null_tuples() == 0
    # Every 1-tuple the collector knows about can be read.
    for o in gc.get_objects():
        if type(o) is tuple and len(o) == 1:
            o[0]  # noqa: B018


@pytest.mark.parametrize("qimpl", list(QUEUE_IMPLS.values()), ids=lambda q: q.name)
def test_traced_awaits_see_plain_stop_iteration(qimpl, run) -> None:
    """bdb skips only ``exc_type is StopIteration`` in coroutines; an item
    dropped after the await dies at once, as with no tracer."""
    seen: list[type] = []

    def tracer(frame, event, arg):
        if event == "exception" and issubclass(arg[0], StopIteration):
            seen.append(arg[0])
        return tracer

    async def main() -> bool:
        q = qimpl.Queue()
        q.put_nowait(Item())
        x = await q.get()
        r = weakref.ref(x)
        del x
        return r() is None

    old = sys.gettrace()
    sys.settrace(tracer)
    try:
        dead = run(main())
    finally:
        sys.settrace(old)
    assert dead
    assert all(t is StopIteration for t in seen), seen


@pytest.mark.parametrize("hook", ["settrace", "setprofile"])
def test_hand_next_traced_raises_plain(impl, hook) -> None:
    set_hook = getattr(sys, hook)
    old = getattr(sys, hook.replace("set", "get"))()
    item = Item()
    it = _ready(impl, item)

    def noop(frame, event, arg):
        return None

    set_hook(noop)
    try:
        e = _finish(it)
    finally:
        set_hook(old)
    assert type(e) is StopIteration
    assert e.value is item


def test_context_is_the_handled_exception(impl) -> None:
    it = _ready(impl, 5)
    try:
        raise KeyError("handled")
    except KeyError as handled:
        e = _finish(it)
        assert e.__context__ is handled
    assert e.value == 5


@pytest.mark.parametrize("value", [5, (1, 2), Item])
def test_caught_exception_pickles_copies_and_prints(impl, value) -> None:
    e = _finish(_ready(impl, value))
    assert isinstance(e, StopIteration)
    assert e.value == value
    for clone in (pickle.loads(pickle.dumps(e)), copy.copy(e), copy.deepcopy(e)):
        assert type(clone) is StopIteration
        assert clone.value == value
        assert clone.args == e.args
    assert traceback.format_exception_only(e) == traceback.format_exception_only(
        StopIteration(value)
    )
    assert repr(e) == repr(StopIteration(value))
    with pytest.raises(TypeError):
        type(e).extra = 1  # type: ignore[attr-defined]


def test_many_finishes_keep_values(impl) -> None:
    """Each exception keeps its own value, also while others finish."""
    kept = [_finish(_ready(impl, i)) for i in range(5)]
    assert [e.value for e in kept] == list(range(5))
    assert [e.args for e in kept] == [(i,) for i in range(5)]


def test_kept_args_do_not_change(impl) -> None:
    """An ``args`` tuple kept past its exception stays as it was while
    later awaitables finish."""
    item = Item()
    args = _finish(_ready(impl, item)).args
    for i in range(3):
        assert _finish(_ready(impl, i)).value == i
    assert args == (item,)
    assert args[0] is item
