"""rustasync: asyncio's sleep, gather and queues, implemented in Rust."""

from ._rustasync import __version__ as __version__

__all__ = ["__version__"]
