"""rustasync: asyncio's sleep, gather and queues, implemented in Rust."""

from ._install import install as install
from ._install import installed as installed
from ._install import uninstall as uninstall
from ._runner import run as run
from ._rustasync import __version__ as __version__
from ._virtual import VirtualTimeLoop as VirtualTimeLoop

__all__ = ["VirtualTimeLoop", "__version__", "install", "installed", "run", "uninstall"]
