"""rustasync: asyncio's sleep, gather and queues, implemented in Rust.

``import rustasync`` and use ``rustasync.sleep``, ``rustasync.gather`` and
``rustasync.Queue`` where you would use asyncio's: they run on your own event
loop (stock asyncio, uvloop) with asyncio's semantics, faster.
``rustasync.install()`` (or ``python -m rustasync run script.py``) serves
asyncio's own names from rustasync.
"""

from ._install import install as install
from ._install import installed as installed
from ._install import uninstall as uninstall
from ._runner import run as run
from ._rustasync import Channel as Channel
from ._rustasync import ChannelClosed as ChannelClosed
from ._rustasync import GatheringFuture as GatheringFuture
from ._rustasync import LifoQueue as LifoQueue
from ._rustasync import PriorityQueue as PriorityQueue
from ._rustasync import Queue as Queue
from ._rustasync import QueueEmpty as QueueEmpty
from ._rustasync import QueueFull as QueueFull
from ._rustasync import QueueShutDown as QueueShutDown
from ._rustasync import RustPanic as RustPanic
from ._rustasync import Sleep as Sleep
from ._rustasync import __version__ as __version__
from ._rustasync import gather as gather
from ._rustasync import sleep as sleep
from ._virtual import VirtualTimeLoop as VirtualTimeLoop

try:  # the NATS JetStream channel (Cargo feature `nats`, on by default)
    from ._rustasync import BrokerConnectionError as BrokerConnectionError
    from ._rustasync import BrokerError as BrokerError
    from ._rustasync import NatsChannel as NatsChannel
except ImportError:  # pragma: no cover - built without the feature
    pass

__all__ = [
    "BrokerConnectionError",
    "BrokerError",
    "Channel",
    "ChannelClosed",
    "GatheringFuture",
    "LifoQueue",
    "NatsChannel",
    "PriorityQueue",
    "Queue",
    "QueueEmpty",
    "QueueFull",
    "QueueShutDown",
    "RustPanic",
    "Sleep",
    "VirtualTimeLoop",
    "__version__",
    "gather",
    "install",
    "installed",
    "run",
    "sleep",
    "uninstall",
]
