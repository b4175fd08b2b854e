"""Serve asyncio's sleep, gather and queues from rustasync for a while.

`install()` rebinds a few names on the `asyncio` package and on the
submodules that define them (`asyncio.tasks`, `asyncio.queues`), so that code
which looks them up after the call -- `asyncio.sleep(...)`,
`from asyncio import Queue`, `asyncio.tasks.gather(...)` -- gets rustasync's
versions. `uninstall()` puts back exactly the objects that were there before.
Installs nest: each `install()` needs one `uninstall()`, and asyncio is
restored when the last one is undone. See docs/running.md for what a program
can and cannot observe.

The queue classes are served as `served_queue_class()` classes: Python
subclasses of rustasync's queues whose own subclasses are built on asyncio's
queue classes instead (see `ServedQueueMeta`).
"""

from __future__ import annotations

import abc
import asyncio
import asyncio.queues
import asyncio.tasks
import contextlib
import functools
import inspect
import threading
import types
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

__all__ = ["install", "installed", "is_installed", "uninstall"]

# name -> the asyncio submodule that defines it. Each name is rebound there
# and on the `asyncio` package itself.
_HOMES: dict[str, ModuleType] = {
    "sleep": asyncio.tasks,
    "gather": asyncio.tasks,
    "Queue": asyncio.queues,
    "LifoQueue": asyncio.queues,
    "PriorityQueue": asyncio.queues,
    "QueueShutDown": asyncio.queues,
}

_MISSING = object()

_lock = threading.Lock()
_depth = 0
# (module, name) -> the object found there by the outermost install().
_saved: dict[tuple[ModuleType, str], Any] = {}


class ServedQueueMeta(abc.ABCMeta):
    """The metaclass of the queue classes `install()` serves as asyncio's.

    A served class `S` is a subclass of a rustasync queue class, so
    `asyncio.Queue()` makes a rustasync queue. A class statement that
    subclasses `S` (`class MyQueue(asyncio.Queue): ...`) gets the asyncio
    queue class `S` stands for as its base instead: subclasses override
    `_init`/`_put`/`_get`, `put_nowait`, `__init__` and read `_queue`,
    which only asyncio's pure-Python implementation honours, so they run
    exactly as on stock asyncio.

    `isinstance`/`issubclass` against `S` accept both the rustasync class
    and the asyncio class (a `MyQueue` is an `asyncio.Queue`, and so is a
    served `asyncio.LifoQueue`). Reading a method of asyncio's class from
    `S` itself (`asyncio.Queue.__init__(self, maxsize)`,
    `asyncio.Queue.put_nowait(self, item)`, as older subclasses do) gives a
    function that runs asyncio's method for instances of asyncio's class and
    rustasync's for rustasync's.

    The metaclass derives from `abc.ABCMeta`, so a subclass may also
    inherit an `abc.ABC`; a base with any other metaclass than `type` or
    `abc.ABCMeta` (say a `typing.Protocol`) makes the class statement raise
    `TypeError: metaclass conflict`, where stock asyncio accepts it.
    """

    def __new__(mcls, name: str, bases: tuple[type, ...], ns: dict[str, Any], **kwargs: Any) -> Any:
        stock_bases = tuple(_STOCK.get(b, b) for b in bases)
        if stock_bases == bases:
            return super().__new__(mcls, name, bases, ns, **kwargs)
        meta, _, kwds = types.prepare_class(name, stock_bases, kwargs)
        return meta(name, stock_bases, ns, **kwds)

    def __instancecheck__(cls, obj: Any) -> bool:
        pair = _PAIRS.get(cls)
        if pair is None:
            return super().__instancecheck__(obj)
        return isinstance(obj, pair[0]) or isinstance(obj, pair[1])

    def __subclasscheck__(cls, sub: Any) -> bool:
        pair = _PAIRS.get(cls)
        if pair is None:
            return super().__subclasscheck__(sub)
        return issubclass(sub, pair[0]) or issubclass(sub, pair[1])

    def __getattribute__(cls, name: str) -> Any:
        dual = _DUALS.get(cls, _NO_DUALS).get(name)
        if dual is not None:
            return dual
        return super().__getattribute__(name)


# served class -> the asyncio class it stands for, as a base
_STOCK: dict[type, type] = {}
# served class -> (rustasync class, asyncio class)
_PAIRS: dict[type, tuple[type, type]] = {}
# served class -> name -> the function `S.name` gives (see ServedQueueMeta)
_DUALS: dict[type, dict[str, Callable[..., Any]]] = {}
_NO_DUALS: dict[str, Callable[..., Any]] = {}
# (rustasync class, asyncio class) -> served class
_SERVED: dict[tuple[type, type], type] = {}


def _dual(ours: Any, stock_fn: Callable[..., Any], stock: type) -> Callable[..., Any]:
    """`stock_fn` for instances of `stock`, `ours` for the others."""
    if ours is None:
        return stock_fn
    if inspect.iscoroutinefunction(stock_fn):

        async def method_async(self: Any, *args: Any, **kwargs: Any) -> Any:
            if isinstance(self, stock):
                return await stock_fn(self, *args, **kwargs)
            return await ours(self, *args, **kwargs)

        return functools.wraps(stock_fn)(method_async)

    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(self, stock):
            return stock_fn(self, *args, **kwargs)
        return ours(self, *args, **kwargs)

    return functools.wraps(stock_fn)(method)


# Guards the making of served classes (install() and a first unpickling may
# race); separate from `_lock`, which install() holds while it calls in.
_classes_lock = threading.Lock()

# What asyncio's queues keep in their instance `__dict__`; a pickle made by
# asyncio carries these, and the served classes load them into Rust.
_STOCK_FIELDS = frozenset(
    ("_maxsize", "_getters", "_putters", "_unfinished_tasks", "_finished", "_queue")
    + ("_is_shutdown", "_loop")
)


def _served_setstate(self: Any, state: Any) -> None:
    """Apply a `__getstate__()` state, or the state of an asyncio queue.

    Pickles made by asyncio name `asyncio.queues.Queue`, which is the served
    class while rustasync is installed; their state is asyncio's instance
    `__dict__`, which is loaded into the Rust queue here.
    """
    slots = None
    if isinstance(state, tuple) and len(state) == 2:
        state, slots = state
    if isinstance(state, dict) and "_queue" in state and "_unfinished_tasks" in state:
        from ._rustasync import _restore_queue

        _restore_queue(
            self,
            state.get("_maxsize", 0),
            list(state["_queue"]),
            state["_unfinished_tasks"],
            bool(state.get("_is_shutdown", False)),
        )
        state = {k: v for k, v in state.items() if k not in _STOCK_FIELDS}
    if state:
        vars(self).update(state)
    if slots:
        for key, value in slots.items():
            setattr(self, key, value)


def served_queue_class(ours: type, stock: type) -> type:
    """The class `install()` serves in place of the asyncio queue `stock`.

    A subclass of the rustasync queue `ours` with an instance `__dict__` and
    weak references (as asyncio's queues have), under `ServedQueueMeta`.
    One class per pair, so installs and uninstalls keep its identity.
    """
    with _classes_lock:
        served = _SERVED.get((ours, stock))
        if served is not None:
            return served
        doc = (
            f"{ours.__doc__}\n\nServed as `asyncio.{stock.__name__}` by rustasync.install(): "
            f"a subclass of `rustasync.{ours.__name__}`; a class that subclasses it is "
            f"built on asyncio's own `{stock.__name__}` instead."
        )
        ns = {
            "__slots__": ("__dict__", "__weakref__"),
            "__module__": __name__,
            "__qualname__": stock.__name__,
            "__doc__": doc,
            "__setstate__": _served_setstate,
        }
        served = ServedQueueMeta(stock.__name__, (ours,), ns)
        duals: dict[str, Callable[..., Any]] = {}
        for klass in reversed(stock.__mro__[:-1]):
            for name, value in vars(klass).items():
                if isinstance(value, types.FunctionType):
                    duals[name] = _dual(getattr(ours, name, None), value, stock)
        _STOCK[served] = stock
        _PAIRS[served] = (ours, stock)
        _DUALS[served] = duals
        _SERVED[(ours, stock)] = served
        # Where pickle looks a class up by its module and name.
        globals()[stock.__name__] = served
        return served


def __getattr__(name: str) -> Any:
    """The served queue classes by name, made on first use.

    Pickles of served queues name their class `rustasync._install.Queue`
    (or `LifoQueue`, `PriorityQueue`); this lets a process that has not
    called `install()` load them.
    """
    if name in ("Queue", "LifoQueue", "PriorityQueue"):
        import rustasync

        stock = asyncio.queues.__dict__.get(name)
        if isinstance(stock, type):
            return served_queue_class(getattr(rustasync, name), stock)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _replacements() -> dict[str, Any]:
    """The rustasync objects to serve, by asyncio name.

    Imported here, at install time, rather than when this module is imported.

    `QueueShutDown` is only swapped where asyncio has one (3.13+) and
    rustasync's is a different class that `except asyncio.QueueShutDown` would
    not catch. On older Pythons asyncio is left without the name, so that
    `hasattr(asyncio, "QueueShutDown")` still tells the truth about the
    standard library.
    """
    try:
        from . import LifoQueue, PriorityQueue, Queue, QueueShutDown, gather, sleep
    except ImportError as exc:
        raise ImportError(
            f"this build of rustasync cannot serve asyncio's primitives: {exc}"
        ) from exc
    table: dict[str, Any] = {"sleep": sleep, "gather": gather}
    for name, ours in (
        ("Queue", Queue),
        ("LifoQueue", LifoQueue),
        ("PriorityQueue", PriorityQueue),
    ):
        stock = asyncio.queues.__dict__.get(name)
        table[name] = served_queue_class(ours, stock) if isinstance(stock, type) else ours
    stock = getattr(asyncio.queues, "QueueShutDown", None)
    if stock is not None and not (
        isinstance(QueueShutDown, type) and issubclass(QueueShutDown, stock)
    ):
        table["QueueShutDown"] = QueueShutDown
    return table


def _targets(name: str) -> tuple[ModuleType, ModuleType]:
    return (asyncio, _HOMES[name])


def install() -> None:
    """Serve `asyncio.sleep`, `gather` and the queue classes from rustasync.

    The names are rebound on `asyncio` and on `asyncio.tasks` /
    `asyncio.queues`. References taken before the call (`from asyncio import
    sleep` at import time) keep the stock objects.

    `asyncio.Queue`, `LifoQueue` and `PriorityQueue` become subclasses of
    rustasync's queues (with `__dict__` and weak references); a class that
    subclasses one of them is built on asyncio's own queue class instead,
    so it keeps asyncio's behaviour (see `ServedQueueMeta`).

    Calls nest: asyncio is restored by the `uninstall()` that matches the
    first `install()`.

    Raises:
        ImportError: if this build of rustasync lacks one of the primitives;
            asyncio is then left untouched.
    """
    global _depth
    with _lock:
        if _depth == 0:
            table = _replacements()
            saved: dict[tuple[ModuleType, str], Any] = {}
            for name in table:
                for module in _targets(name):
                    saved[(module, name)] = module.__dict__.get(name, _MISSING)
            _saved.clear()
            _saved.update(saved)
            for name, obj in table.items():
                for module in _targets(name):
                    setattr(module, name, obj)
        _depth += 1


def uninstall() -> None:
    """Undo one `install()`; the last one puts asyncio's own objects back.

    Restores the very objects that were bound before the first `install()`
    (identity, not equality), whatever has been bound in between.

    Raises:
        RuntimeError: if rustasync is not installed.
    """
    global _depth
    with _lock:
        if _depth == 0:
            raise RuntimeError("rustasync is not installed")
        _depth -= 1
        if _depth:
            return
        for (module, name), obj in _saved.items():
            if obj is _MISSING:
                module.__dict__.pop(name, None)
            else:
                setattr(module, name, obj)
        _saved.clear()


def is_installed() -> bool:
    """Whether asyncio's primitives are currently served by rustasync."""
    return _depth > 0


@contextlib.contextmanager
def installed() -> Iterator[None]:
    """Context manager form of `install()` / `uninstall()`.

    asyncio is restored when the block exits, also when it raises. Blocks may
    nest; only the outermost one restores asyncio.
    """
    install()
    try:
        yield
    finally:
        uninstall()
