"""The tutorial's example programs, ported to rustasync (``--backend asyncio|rustasync``).

They ship inside the package so that `python -m rustasync demo` works from an
installed wheel; the repository's ``examples/`` scripts run these files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

DIRECTORY = Path(__file__).resolve().parent


def exec_as(name: str, namespace: dict[str, Any]) -> None:
    """Run the example `name` in `namespace` (a script's globals, `__file__` kept).

    Tracebacks point at the example's source in the package.
    """
    path = DIRECTORY / name
    exec(compile(path.read_text(encoding="utf-8"), str(path), "exec"), namespace)
