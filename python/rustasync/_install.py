"""Serve asyncio's sleep, gather and queues from rustasync for a while.

`install()` rebinds a few names on the `asyncio` package and on the
submodules that define them (`asyncio.tasks`, `asyncio.queues`), so that code
which looks them up after the call -- `asyncio.sleep(...)`,
`from asyncio import Queue`, `asyncio.tasks.gather(...)` -- gets rustasync's
versions. `uninstall()` puts back exactly the objects that were there before.
Installs nest: each `install()` needs one `uninstall()`, and asyncio is
restored when the last one is undone. See docs/running.md for what a program
can and cannot observe.
"""

from __future__ import annotations

import asyncio
import asyncio.queues
import asyncio.tasks
import contextlib
import threading
from collections.abc import Iterator
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
    table: dict[str, Any] = {
        "sleep": sleep,
        "gather": gather,
        "Queue": Queue,
        "LifoQueue": LifoQueue,
        "PriorityQueue": PriorityQueue,
    }
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
