"""`iscoroutinefunction` answers for rustasync's callables as for asyncio's.

Libraries pick between "call and await" and "call and use the result" with
`inspect.iscoroutinefunction` / `asyncio.iscoroutinefunction`; each check
here compares rustasync's callable with asyncio's counterpart.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import pickle
import pydoc
import sys
import warnings

import pytest

import rustasync

STOCK_QUEUES = {
    "Queue": asyncio.queues.Queue,
    "LifoQueue": asyncio.queues.LifoQueue,
    "PriorityQueue": asyncio.queues.PriorityQueue,
}
METHODS = ["put", "get", "join", "put_nowait", "get_nowait", "task_done", "qsize", "empty", "full"]


def asyncio_iscoroutinefunction(f):
    # Deprecated on 3.14; still what libraries call on 3.11 to 3.13.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return asyncio.iscoroutinefunction(f)


def answers(f):
    return inspect.iscoroutinefunction(f), asyncio_iscoroutinefunction(f)


def pairs():
    yield "sleep", asyncio.tasks.sleep, rustasync.sleep
    yield "gather", asyncio.tasks.gather, rustasync.gather
    for cls, stock in STOCK_QUEUES.items():
        ours = getattr(rustasync, cls)
        for m in METHODS:
            yield f"{cls}.{m}", getattr(stock, m), getattr(ours, m)
            yield f"{cls}().{m}", getattr(stock(), m), getattr(ours(), m)


@pytest.mark.parametrize(("stock", "ours"), [p[1:] for p in pairs()], ids=[p[0] for p in pairs()])
def test_same_answer_as_asyncio(stock, ours):
    assert answers(ours) == answers(stock)


def test_the_awaitable_ones_are_coroutine_functions():
    q = rustasync.Queue()
    for f in (rustasync.sleep, rustasync.Queue.put, rustasync.Queue.get, rustasync.Queue.join):
        assert answers(f) == (True, True), f
    for f in (q.put, q.get, q.join, q.put_many, q.get_many):
        assert answers(f) == (True, True), f
    assert answers(rustasync.gather) == (False, False)
    assert answers(q.get_nowait_many) == (False, False)


def test_answers_under_install():
    with rustasync.installed():
        q = asyncio.Queue()
        for f in (asyncio.sleep, asyncio.Queue.put, asyncio.Queue.get, q.put, q.get, q.join):
            assert answers(f) == (True, True), f
        assert answers(asyncio.gather) == (False, False)


@pytest.mark.skipif(sys.version_info < (3, 12), reason="markcoroutinefunction is new in 3.12")
def test_carries_the_markcoroutinefunction_marker():
    marked = inspect.markcoroutinefunction(lambda: None)
    for f in (rustasync.sleep, rustasync.Queue.put):
        assert f._is_coroutine_marker is marked._is_coroutine_marker


def test_signatures_match_asyncio():
    assert inspect.signature(rustasync.sleep) == inspect.signature(asyncio.tasks.sleep)
    for m in ("put", "get", "join"):
        stock, ours = getattr(asyncio.queues.Queue, m), getattr(rustasync.Queue, m)
        assert inspect.signature(ours) == inspect.signature(stock)
        assert inspect.signature(getattr(rustasync.Queue(), m)) == inspect.signature(
            getattr(asyncio.queues.Queue(), m)
        )


def test_names_docs_and_help():
    q = rustasync.Queue()
    assert rustasync.sleep.__name__ == "sleep"
    assert rustasync.Queue.put.__qualname__ == "Queue.put"
    assert q.put.__self__ is q
    assert q.put.__func__ is rustasync.Queue.put
    assert rustasync.sleep.__doc__.startswith("Sleep for `delay` seconds")
    assert "Like `asyncio.Queue.put`" in rustasync.Queue.put.__doc__
    text = pydoc.render_doc(rustasync.sleep, renderer=pydoc.plaintext)
    assert "async sleep(delay, result=None)" in text
    assert "Like `asyncio.sleep`" in text


def test_pickled_and_copied_by_reference():
    for f in (rustasync.sleep, rustasync.Queue.put, rustasync.LifoQueue.get):
        assert pickle.loads(pickle.dumps(f)) is f
        assert copy.copy(f) is f
        assert copy.deepcopy(f) is f


def test_binds_like_asyncio_sleep_in_a_class(impl):
    """A function stored on a class binds to the instance, as asyncio's do."""

    class Holder:
        nap = impl.sleep

    h = Holder()
    assert inspect.ismethod(h.nap)
    assert h.nap.__self__ is h


def test_calls_pass_arguments_through(run):
    async def main():
        q = rustasync.Queue()
        await rustasync.Queue.put(q, 1)
        await q.put(item=2)
        put = q.put
        await put(3)
        got = [await rustasync.Queue.get(q), await q.get(), await q.get()]
        slept = await rustasync.sleep(delay=0, result="r")
        return got, slept

    assert run(main()) == ([1, 2, 3], "r")


def test_wrong_arguments_raise_as_before():
    q = rustasync.Queue()
    with pytest.raises(TypeError):
        rustasync.Queue.put(object(), 1)
    with pytest.raises(TypeError):
        rustasync.Queue.get()
    with pytest.raises(TypeError):
        rustasync.Queue.get(q, 1)
    with pytest.raises(TypeError):
        q.put()
    with pytest.raises(TypeError):
        q.put(1, bogus=2)
    with pytest.raises(TypeError):
        rustasync.sleep()
    with pytest.raises(TypeError):
        rustasync.sleep(0, nope=1)


async def dispatch(f, *args):
    """How libraries call a callback: await the result of a coroutine function."""
    result = f(*args)
    if inspect.iscoroutinefunction(f):
        result = await result
    return result


def test_dispatching_library_puts_and_sleeps(run, impl):
    queue_cls = asyncio.queues.Queue if impl.name == "asyncio" else rustasync.Queue

    async def main():
        q = queue_cls()
        for x in range(3):
            await dispatch(q.put, x)
        got = [await dispatch(q.get) for _ in range(3)]
        slept = await dispatch(impl.sleep, 0, "done")
        return got, slept

    assert run(main()) == ([0, 1, 2], "done")


def test_aiostream_under_install(run):
    """aiostream's operators dispatch on `inspect.iscoroutinefunction`."""
    from aiostream import pipe, stream

    async def main():
        q = asyncio.Queue()
        xs = stream.range(4) | pipe.action(q.put)
        assert await (xs | pipe.list()) == [0, 1, 2, 3]
        ys = stream.range(3) | pipe.map(asyncio.sleep, task_limit=1)
        slept = await (ys | pipe.list())
        return type(q), q.qsize(), slept

    with rustasync.installed():
        cls, size, slept = run(main())
    assert issubclass(cls, rustasync.Queue)
    assert size == 4
    assert slept == [None, None, None]
