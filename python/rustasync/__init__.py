"""rustasync: asyncio's sleep, gather and queues, implemented in Rust."""

from ._rustasync import Channel as Channel
from ._rustasync import ChannelClosed as ChannelClosed
from ._rustasync import RustPanic as RustPanic
from ._rustasync import __version__ as __version__

__all__ = ["Channel", "ChannelClosed", "RustPanic", "__version__"]
