"""rustasync: asyncio's sleep, gather and queues, implemented in Rust.

``import rustasync`` and use ``rustasync.sleep``, ``rustasync.gather`` where you
would use asyncio's: they run on your own event loop (stock asyncio, uvloop)
with asyncio's semantics, faster.
"""

from ._rustasync import GatheringFuture as GatheringFuture
from ._rustasync import RustPanic as RustPanic
from ._rustasync import Sleep as Sleep
from ._rustasync import __version__ as __version__
from ._rustasync import gather as gather
from ._rustasync import sleep as sleep

__all__ = [
    "GatheringFuture",
    "RustPanic",
    "Sleep",
    "__version__",
    "gather",
    "sleep",
]
