"""Programs that subclass asyncio's queues run unchanged under install().

Each scenario is one body run twice: on stock asyncio, and with rustasync
installed (class statements included, so a subclass of `asyncio.Queue` is
made while rustasync serves the name). The results must be equal, and equal
to what asyncio documents, so a scenario fails if either side is wrong.
"""

from __future__ import annotations

import abc
import asyncio
import copy
import gc
import inspect
import pickle
import sys
import threading
import weakref
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

import pytest

import rustasync

T = TypeVar("T")


def both(run, body: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """`run(body())` on stock asyncio and under install(); the two must agree."""
    stock = run(body())
    with rustasync.installed():
        served = run(body())
    assert served == stock
    return stock


# -- storage hooks: only asyncio's implementation honours them -----------------------------------


def test_dedup_queue_overriding_init_put_get(run):
    async def body():
        class Dedup(asyncio.Queue):
            def _init(self, maxsize):
                self._queue = []

            def _put(self, item):
                if item not in self._queue:
                    self._queue.append(item)

            def _get(self):
                return self._queue.pop(0)

        q = Dedup()
        for x in (1, 1, 2, 2):
            await q.put(x)
        return q.qsize(), [q.get_nowait() for _ in range(q.qsize())], q._unfinished_tasks

    assert both(run, body) == (2, [1, 2], 4)


def test_priority_queue_with_custom_key(run):
    async def body():
        import heapq

        class ByLength(asyncio.PriorityQueue):
            def _put(self, item):
                heapq.heappush(self._queue, (len(item), item))

            def _get(self):
                return heapq.heappop(self._queue)[1]

        q = ByLength()
        for w in ("bbb", "a", "cc"):
            q.put_nowait(w)
        return [await q.get() for _ in range(3)]

    assert both(run, body) == ["a", "cc", "bbb"]


def test_format_override_shows_in_repr(run):
    async def body():
        class Tagged(asyncio.LifoQueue):
            def _format(self):
                return super()._format() + " tag=x"

        q = Tagged(3)
        return repr(q).split(" ", 3)[3], str(q)

    assert both(run, body) == ("maxsize=3 tag=x>", "<Tagged maxsize=3 tag=x>")


def test_reads_private_state(run):
    async def body():
        class Peek(asyncio.Queue):
            def peek(self):
                return self._queue[0]

            def waiting(self):
                return len(self._getters), self._unfinished_tasks

        q = Peek()
        q.put_nowait("a")
        q.put_nowait("b")
        return q.peek(), q.waiting()

    assert both(run, body) == ("a", (0, 2))


# -- constructors ---------------------------------------------------------------------------------


def test_init_with_its_own_signature(run):
    async def body():
        class Named(asyncio.Queue):
            def __init__(self, name):
                super().__init__(maxsize=2)
                self.name = name

        q = Named("jobs")
        await q.put(1)
        await q.put(2)
        return q.name, q.maxsize, q.full()

    assert both(run, body) == ("jobs", 2, True)


def test_keyword_only_init(run):
    async def body():
        class Labelled(asyncio.Queue):
            def __init__(self, *, label, maxsize=0):
                super().__init__(maxsize)
                self.label = label

        q = Labelled(label="x", maxsize=1)
        return q.label, q.maxsize, vars(q)["label"]

    assert both(run, body) == ("x", 1, "x")


def test_explicit_base_class_calls(run):
    """Older code calls the base class's methods by name, not through super()."""

    async def body():
        class Counting(asyncio.Queue):
            def __init__(self, n=3):
                asyncio.Queue.__init__(self, n)
                self.count = 0

            def put_nowait(self, item):
                self.count += 1
                asyncio.Queue.put_nowait(self, item)

            async def get(self):
                return ("got", await asyncio.Queue.get(self))

        q = Counting()
        await q.put(1)
        await q.put(2)
        return q.count, q.maxsize, await q.get()

    assert both(run, body) == (2, 3, ("got", 1))


# -- overridden public methods are honoured -------------------------------------------------------


def test_put_calls_overridden_put_nowait(run):
    async def body():
        seen = []

        class Logged(asyncio.Queue):
            def put_nowait(self, item):
                seen.append(item)
                super().put_nowait(item)

            def get_nowait(self):
                return super().get_nowait() * 10

        q = Logged()
        await q.put(1)
        await q.put(2)
        return seen, await q.get(), await q.get()

    assert both(run, body) == ([1, 2], 10, 20)


def test_join_and_task_done_on_a_subclass(run):
    async def body():
        class Q(asyncio.Queue):
            pass

        q = Q()
        order = []

        async def worker():
            while True:
                item = await q.get()
                order.append(item)
                q.task_done()

        for i in range(3):
            q.put_nowait(i)
        w = asyncio.create_task(worker())
        await q.join()
        w.cancel()
        return order

    assert both(run, body) == [0, 1, 2]


def test_subclass_of_a_subclass(run):
    async def body():
        class Base(asyncio.Queue):
            def describe(self):
                return f"{type(self).__name__}:{self.qsize()}"

        class Stack(Base):
            def _init(self, maxsize):
                self._queue = []

            def _get(self):
                return self._queue.pop()

        s = Stack()
        for i in range(3):
            s.put_nowait(i)
        return s.describe(), s.get_nowait()

    assert both(run, body) == ("Stack:3", 2)


# -- what an object of a normal Python class offers ------------------------------------------------


def test_subclass_instances_are_ordinary_objects(run):
    async def body():
        class Q(asyncio.Queue):
            pass

        q = Q()
        q.owner = "me"
        ref = weakref.ref(q)
        ws = weakref.WeakSet([q])
        copied = copy.copy(q)
        return ref() is q, q in ws, vars(q)["owner"], copied.owner, type(copied) is Q

    assert both(run, body) == (True, True, "me", "me", True)


with rustasync.installed():

    class ModuleLevel(asyncio.Queue):
        """Made under install() at module level, so pickle finds it by name."""


def test_subclass_pickles_as_on_stock(run):
    async def body():
        q = ModuleLevel(5)
        q.put_nowait("x")
        back = pickle.loads(pickle.dumps(q))
        return back.maxsize, back.get_nowait()

    assert both(run, body) == (5, "x")


def test_generic_subclasses(run):
    async def body():
        class IntQueue(asyncio.Queue[int]):
            pass

        class AnyQueue(asyncio.Queue, Generic[T]):
            pass

        a, b = IntQueue(), AnyQueue[str]()
        a.put_nowait(1)
        b.put_nowait("s")
        return a.get_nowait(), b.get_nowait(), IntQueue.__orig_bases__[0].__args__

    assert both(run, body) == (1, "s", (int,))


def test_abc_mixin(run):
    async def body():
        class Closeable(abc.ABC):
            @abc.abstractmethod
            def close(self): ...

        class Q(asyncio.Queue, Closeable):
            def close(self):
                return "closed"

        class Half(asyncio.Queue, Closeable):
            pass

        with pytest.raises(TypeError):
            Half()
        return Q().close(), isinstance(Q(), Closeable)

    assert both(run, body) == ("closed", True)


def test_isinstance_and_issubclass(run):
    async def body():
        class Q(asyncio.Queue):
            pass

        class L(asyncio.LifoQueue):
            pass

        return (
            isinstance(Q(), asyncio.Queue),
            isinstance(L(), asyncio.Queue),
            isinstance(L(), asyncio.LifoQueue),
            isinstance(Q(), asyncio.LifoQueue),
            isinstance(asyncio.LifoQueue(), asyncio.Queue),
            isinstance(asyncio.PriorityQueue(), asyncio.LifoQueue),
            issubclass(Q, asyncio.Queue),
            issubclass(asyncio.PriorityQueue, asyncio.Queue),
            issubclass(asyncio.Queue, asyncio.LifoQueue),
            isinstance(object(), asyncio.Queue),
        )

    assert both(run, body) == (True, True, True, False, True, False, True, True, False, False)


def test_the_classes_pickle_by_reference(run):
    async def body():
        classes = (asyncio.Queue, asyncio.LifoQueue, asyncio.PriorityQueue)
        return [pickle.loads(pickle.dumps(c)) is c for c in classes]

    assert both(run, body) == [True, True, True]


def test_signatures_of_the_served_classes(run):
    async def body():
        return str(inspect.signature(asyncio.Queue)), inspect.iscoroutinefunction(asyncio.Queue.put)

    assert both(run, body) == ("(maxsize=0)", True)


# -- plain instances ---------------------------------------------------------------------------


def test_plain_instances_take_attributes_and_weak_references(run):
    async def body():
        q = asyncio.Queue()
        q.owner = "me"
        ws = weakref.WeakSet()
        ws.add(q)
        return weakref.ref(q)() is q, len(ws), vars(q)["owner"]

    assert both(run, body) == (True, 1, "me")


def test_plain_instances_are_rustasync_queues():
    with rustasync.installed():
        for name in ("Queue", "LifoQueue", "PriorityQueue"):
            q = getattr(asyncio, name)()
            assert isinstance(q, getattr(rustasync, name))
            assert not isinstance(q, getattr(asyncio.queues, "_LoopBoundMixin", ()))


def _observe(q) -> tuple[Any, ...]:
    """What a program can see of an idle queue, emptying it on the way."""
    name, maxsize, size = type(q).__name__, q.maxsize, q.qsize()
    items = [q.get_nowait() for _ in range(size)]
    done = 0
    while True:
        try:
            q.task_done()
        except ValueError:
            break
        done += 1
    return name, maxsize, size, items, done, getattr(q, "owner", None)


def _filled(kind: str):
    q = getattr(asyncio, kind)(5)
    for x in (3, [1, 2], 2, 5):
        q.put_nowait(x if kind != "PriorityQueue" or not isinstance(x, list) else 1)
    q.get_nowait()
    q.owner = "me"
    return q


@pytest.mark.parametrize("kind", ["Queue", "LifoQueue", "PriorityQueue"])
def test_idle_instances_pickle_and_deepcopy_as_on_stock(run, kind):
    async def body():
        q = _filled(kind)
        back = pickle.loads(pickle.dumps(q))
        deep = copy.deepcopy(q)
        same_class = type(back) is type(q) and type(deep) is type(q)
        return same_class, _observe(back), _observe(deep), _observe(q)

    same, *states = both(run, body)
    assert same
    assert states[0] == states[1] == states[2]
    assert states[0][4] == 4  # four puts and no task_done: four unfinished


def test_deepcopy_copies_the_items(run):
    async def body():
        q = asyncio.Queue()
        q.put_nowait([1])
        deep = copy.deepcopy(q)
        deep.get_nowait().append(2)
        return q.get_nowait()

    assert both(run, body) == [1]


@pytest.mark.parametrize("kind", ["Queue", "LifoQueue", "PriorityQueue"])
def test_copy_holds_the_same_state(run, kind):
    async def body():
        q = _filled(kind)
        c = copy.copy(q)
        return type(c) is type(q), _observe(c)

    same, state = both(run, body)
    assert same and state[2:] == (3, state[3], 4, "me")


def test_copy_is_a_snapshot_not_an_alias(run):
    """A documented difference: asyncio's copy shares the item deque."""

    async def body():
        q = asyncio.Queue()
        c = copy.copy(q)
        c.put_nowait(1)
        return q.qsize()

    assert run(body()) == 1
    with rustasync.installed():
        assert run(body()) == 0


def test_shutdown_flag_survives_pickle(run):
    if not hasattr(asyncio.Queue, "shutdown"):
        pytest.skip("asyncio.Queue.shutdown is new in Python 3.13")

    async def body():
        q = asyncio.Queue()
        q.put_nowait(1)
        q.shutdown()
        back = pickle.loads(pickle.dumps(q))
        try:
            back.put_nowait(2)
        except asyncio.QueueShutDown:
            refused = True
        return refused, back.get_nowait()

    assert both(run, body) == (True, 1)


def test_queue_with_waiting_tasks_refuses_pickle_but_copies(run):
    async def body():
        q = asyncio.Queue()
        getter = asyncio.create_task(q.get())
        await asyncio.sleep(0)
        out = []
        for how in (pickle.dumps, copy.deepcopy):
            try:
                how(q)
                out.append("ok")
            except TypeError:
                out.append("TypeError")
        out.append(copy.copy(q).qsize())
        q.put_nowait(1)
        out.append(await getter)
        return out

    assert both(run, body) == ["TypeError", "TypeError", 0, 1]


def test_queue_bound_to_a_loop_refuses_pickle(run):
    async def body():
        q = asyncio.Queue()
        getter = asyncio.create_task(q.get())
        await asyncio.sleep(0)
        q.put_nowait(1)
        await getter
        try:
            pickle.dumps(q)
        except (TypeError, AttributeError, pickle.PicklingError):
            return "refused"
        return "pickled"

    assert both(run, body) == "refused"


@pytest.mark.parametrize("kind", ["Queue", "LifoQueue", "PriorityQueue"])
def test_rustasync_queues_pickle_like_asyncio_queues(kind):
    stock, ours = getattr(asyncio, kind)(3), getattr(rustasync, kind)(3)
    for q in (stock, ours):
        for x in (2, 1, 3):
            q.put_nowait(x)
        q.get_nowait()
    back = pickle.loads(pickle.dumps(ours))
    assert type(back) is type(ours)
    assert _observe(back)[1:] == _observe(pickle.loads(pickle.dumps(stock)))[1:]


def test_served_pickle_loads_in_a_process_without_install(tmp_path):
    import subprocess

    with rustasync.installed():
        q = asyncio.PriorityQueue()
        q.put_nowait(2)
        q.put_nowait(1)
        q.tag = "t"
        data = pickle.dumps(q)
    path = tmp_path / "q.pickle"
    path.write_bytes(data)
    code = (
        "import pickle, sys, rustasync\n"
        "q = pickle.load(open(sys.argv[1], 'rb'))\n"
        "assert isinstance(q, rustasync.PriorityQueue), type(q)\n"
        "print(q.tag, q.get_nowait(), q.get_nowait())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["t", "1", "2"]


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("items", 3, TypeError),
        ("unfinished", -1, ValueError),
        ("unfinished", "2", ValueError),
        ("maxsize", "2", TypeError),
    ],
)
def test_bad_rebuild_arguments_are_named(field, value, error):
    from rustasync._rustasync import _rebuild_queue

    args = {"maxsize": 0, "items": [1], "unfinished": 1}
    args[field] = value
    with pytest.raises(error, match=field):
        _rebuild_queue(
            rustasync.Queue, (), {}, shutdown=False, waiters=(), loops=(None, None), **args
        )


def test_restore_refuses_a_queue_in_use(run):
    from rustasync._rustasync import _restore_queue

    async def body():
        q = rustasync.Queue()
        getter = asyncio.create_task(q.get())
        await asyncio.sleep(0)
        with pytest.raises(TypeError, match="wait on"):
            _restore_queue(q, 0, [1], 1, False)
        q.put_nowait(2)
        return await getter

    assert run(body()) == 2


# -- copying subclasses: rustasync's classes against asyncio's --------------------------------


def _subclass_cases(base: type) -> dict[str, Any]:
    class Slotted(base):
        __slots__ = ("a",)

    class Named(base):
        def __new__(cls, name, maxsize=0):
            return super().__new__(cls) if base is asyncio.Queue else super().__new__(cls, maxsize)

        def __init__(self, name, maxsize=0):
            if base is asyncio.Queue:  # rustasync's take maxsize in __new__
                super().__init__(maxsize)
            self.name = name

        def __getnewargs__(self):
            return (self.name, self.maxsize)

    class Locked(base):
        def __new__(cls):
            return super().__new__(cls) if base is asyncio.Queue else super().__new__(cls, 3)

        def __init__(self):
            if base is asyncio.Queue:
                super().__init__(3)
            self.lock = threading.Lock()

        def __getstate__(self):
            state = dict(vars(self))
            del state["lock"]
            return state

        def __setstate__(self, state):
            vars(self).update(state)
            self.lock = threading.Lock()

    for cls in (Slotted, Named, Locked):
        # Reachable by name, so pickle can find the local classes.
        cls.__qualname__ = f"_{cls.__name__}_{base.__module__.replace('.', '_')}"
        globals()[cls.__qualname__] = cls
    slotted = Slotted(2)
    slotted.a = 5
    named = Named("jobs", 3)
    locked = Locked()
    for q in (slotted, named, locked):
        q.put_nowait(1)
    return {"slotted": slotted, "named": named, "locked": locked}


def _look(q) -> tuple[Any, ...]:
    extra = [getattr(q, k, None) for k in ("a", "name")]
    return (type(q).__name__, q.maxsize, q.qsize(), *extra, hasattr(q, "lock"))


@pytest.mark.parametrize("case", ["slotted", "named", "locked"])
@pytest.mark.parametrize("how", ["copy", "deepcopy", "pickle"])
def test_subclass_copies_keep_what_asyncio_keeps(case, how):
    def go(base: type) -> tuple[Any, ...]:
        q = _subclass_cases(base)[case]
        if how == "copy":
            other = copy.copy(q)
        elif how == "deepcopy":
            other = copy.deepcopy(q)
        else:
            other = pickle.loads(pickle.dumps(q))
        return _look(other)

    assert go(rustasync.Queue) == go(asyncio.Queue)


def test_copyreg_registration_is_honoured():
    import copyreg

    calls = []

    def reducer(q):
        calls.append(type(q).__name__)
        return (type(q), (7,))

    for cls in (asyncio.Queue, rustasync.Queue):
        copyreg.pickle(cls, reducer)
        try:
            assert copy.copy(cls()).maxsize == 7
        finally:
            del copyreg.dispatch_table[cls]
    assert calls == ["Queue", "Queue"]


def test_asyncio_pickles_load_under_install():
    stock = asyncio.PriorityQueue(4)
    for x in (3, 1, 2):
        stock.put_nowait(x)
    stock.get_nowait()
    stock.tag = "t"
    data = pickle.dumps(stock)
    with rustasync.installed():
        q = pickle.loads(data)
        assert isinstance(q, rustasync.PriorityQueue)
        assert (q.maxsize, q.tag, q.qsize()) == (4, "t", 2)
        assert [q.get_nowait(), q.get_nowait()] == [2, 3]
        assert not any(k.startswith("_") for k in vars(q))
        q.task_done()
        q.task_done()
        q.task_done()
        with pytest.raises(ValueError):
            q.task_done()


def test_first_lookups_of_served_classes_agree_across_threads():
    import subprocess

    code = """
import sys, threading, pickle, asyncio, rustasync, rustasync._install as inst
sys.setswitchinterval(1e-6)
got, barrier = [], threading.Barrier(8)
def look():
    barrier.wait()
    got.append(getattr(inst, "Queue"))
threads = [threading.Thread(target=look) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
assert len({id(c) for c in got}) == 1, got
with rustasync.installed():
    assert asyncio.Queue is got[0]
    pickle.dumps(asyncio.Queue())
"""
    for _ in range(5):
        subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_weakly_referenced_queue_is_collected():
    with rustasync.installed():
        q = asyncio.Queue()
        ref = weakref.ref(q)
        del q
        gc.collect()
        assert ref() is None


# -- lifecycle ------------------------------------------------------------------------------------


def test_subclasses_keep_asyncio_base_after_uninstall():
    with rustasync.installed():

        class Q(asyncio.Queue):
            pass

        served = asyncio.Queue
    assert Q.__mro__[1] is asyncio.Queue
    with rustasync.installed():
        assert asyncio.Queue is served


def test_runner_runs_a_dedup_queue_program(tmp_path):
    import subprocess
    import textwrap

    prog = tmp_path / "dedup.py"
    prog.write_text(
        textwrap.dedent(
            """
            import asyncio

            class Dedup(asyncio.Queue):
                def _init(self, maxsize):
                    self._queue = []
                def _put(self, item):
                    if item not in self._queue:
                        self._queue.append(item)
                def _get(self):
                    return self._queue.pop(0)

            async def main():
                q = Dedup()
                for x in (1, 1, 2, 2):
                    await q.put(x)
                plain = asyncio.Queue()
                print(q.qsize(), type(plain).__bases__[0].__module__)

            asyncio.run(main())
            """
        )
    )
    out = subprocess.run(
        [sys.executable, "-m", "rustasync", "run", str(prog)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["2", "rustasync._rustasync"]
