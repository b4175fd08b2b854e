"""rustasync: asyncio's sleep, gather and queues, implemented in Rust."""

from ._rustasync import LifoQueue as LifoQueue
from ._rustasync import PriorityQueue as PriorityQueue
from ._rustasync import Queue as Queue
from ._rustasync import QueueEmpty as QueueEmpty
from ._rustasync import QueueFull as QueueFull
from ._rustasync import QueueShutDown as QueueShutDown
from ._rustasync import __version__ as __version__

__all__ = [
    "LifoQueue",
    "PriorityQueue",
    "Queue",
    "QueueEmpty",
    "QueueFull",
    "QueueShutDown",
    "__version__",
]
