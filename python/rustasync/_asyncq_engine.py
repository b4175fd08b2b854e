"""The tutorial's asyncq.py simulation, run by the Rust engine.

Producers and consumers are tokio tasks exchanging items over a
``rustasync`` channel; output lines come back to this thread in batches.

    python -m rustasync._asyncq_engine -p 2 -c 5 --seed 444
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from ._rustasync import run_asyncq as _run_asyncq

__all__ = ["run", "main"]


async def run(
    nprod: int = 5,
    ncon: int = 10,
    *,
    seed: int | None = None,
    zero_sleep: bool = False,
    items_per_producer: int | None = None,
    sleep_scale: float = 1.0,
    emit: Callable[[Any], Any] | None = None,
    as_text: bool = False,
    yield_every: int = 1,
) -> dict[str, Any]:
    """Run the simulation on the running loop; returns its summary.

    ``emit`` receives the output in batches, on this loop's thread: a list
    of lines, or with ``as_text`` one ``str`` per batch in which every line
    ends with a newline (the cheaper form: no per-line objects). Default:
    write the text to stdout. ``seed`` makes counts, sleeps and items
    reproducible; ``zero_sleep`` replaces every sleep with a bare yield, or
    with ``yield_every=n`` yields on every n-th sleep of a task only (the
    same lines; coarser interleaving, see docs/channel.md).
    Returns ``{"produced", "consumed", "lines", "elapsed"}``.

    Cancel safety: cancelling the task that awaits ``run()`` stops the run.
    ``emit`` is not called once ``cancel()`` has been called, nor after
    ``run()`` returned, raised or was closed; lines not emitted by then are
    dropped.
    """
    if emit is None:
        emit, as_text = sys.stdout.write, True
    guard = _EmitGuard(emit)
    try:
        return await _run_asyncq(
            nprod,
            ncon,
            seed=seed,
            zero_sleep=zero_sleep,
            emit=guard,
            items_per_producer=items_per_producer,
            sleep_scale=sleep_scale,
            as_text=as_text,
            yield_every=yield_every,
        )
    finally:
        guard.closed = True


class _EmitGuard:
    """``emit``, silenced once the run is over for its caller.

    The Rust run stops when the cancellation reaches it, on the runtime's
    next step; a batch already on its way to the loop by then is dropped
    here. Over means: ``run()`` has left (``closed``), or the task running
    it has been asked to cancel since the run started.
    """

    def __init__(self, emit: Callable[[Any], Any]) -> None:
        self.emit = emit
        self.closed = False
        self.task = asyncio.current_task()
        self.start = self.task.cancelling() if self.task is not None else 0

    def __call__(self, batch: Any) -> Any:
        if self.closed or (self.task is not None and self.task.cancelling() > self.start):
            return None
        return self.emit(batch)


def main(argv: Sequence[str] | None = None) -> None:
    """Command line like the tutorial's script, plus --seed/--zero-sleep."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-p", "--nprod", type=int, default=5)
    parser.add_argument("-c", "--ncon", type=int, default=10)
    parser.add_argument("--seed", type=int, default=444)
    parser.add_argument("--zero-sleep", action="store_true")
    parser.add_argument("--items", type=int, default=None, help="items per producer")
    parser.add_argument("--sleep-scale", type=float, default=1.0)
    ns = parser.parse_args(argv)
    start = time.perf_counter()
    asyncio.run(
        run(
            ns.nprod,
            ns.ncon,
            seed=ns.seed,
            zero_sleep=ns.zero_sleep,
            items_per_producer=ns.items,
            sleep_scale=ns.sleep_scale,
        )
    )
    elapsed = time.perf_counter() - start
    print(f"Program completed in {elapsed:0.5f} seconds.")


if __name__ == "__main__":
    main()
