"""The queue implementations the queue tests compare, and a loop runner.

The reference is asyncio itself on 3.13+. On 3.11/3.12 asyncio's queues lack
`shutdown()`; there the 3.13 behaviour comes from `backports.asyncio.queues`
when it is installed, otherwise shutdown tests skip the stock side.
"""

from __future__ import annotations

import asyncio
import sys
import types

from _loops import LOOP_KINDS, loop_factory

import rustasync


def _stock() -> types.SimpleNamespace:
    if hasattr(asyncio, "QueueShutDown"):
        mod, has_shutdown = asyncio, True
    else:
        try:
            import backports.asyncio.queues as mod

            has_shutdown = True
        except ImportError:
            mod, has_shutdown = asyncio, False
    return types.SimpleNamespace(
        name="asyncio",
        Queue=mod.Queue,
        LifoQueue=mod.LifoQueue,
        PriorityQueue=mod.PriorityQueue,
        QueueShutDown=getattr(mod, "QueueShutDown", None),
        QueueEmpty=asyncio.QueueEmpty,
        QueueFull=asyncio.QueueFull,
        has_shutdown=has_shutdown,
    )


STOCK = _stock()
RUST = types.SimpleNamespace(
    name="rustasync",
    Queue=rustasync.Queue,
    LifoQueue=rustasync.LifoQueue,
    PriorityQueue=rustasync.PriorityQueue,
    QueueShutDown=rustasync.QueueShutDown,
    QueueEmpty=rustasync.QueueEmpty,
    QueueFull=rustasync.QueueFull,
    has_shutdown=True,
)
IMPLS = {"asyncio": STOCK, "rustasync": RUST}
LOOPS = LOOP_KINDS


def run(loop_kind: str, main):
    """Run `main()` to completion on a fresh loop of the given kind."""
    with asyncio.Runner(loop_factory=loop_factory(loop_kind)) as runner:
        return runner.run(main())


PY313 = sys.version_info >= (3, 13)
