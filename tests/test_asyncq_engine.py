"""The asyncq engine stops when it is cancelled: `emit` is not called again.

The Rust side (the run stops, counts what it sent) is tested in
src/asyncq.rs; these tests hold `_asyncq_engine.run()` to its promise that
nothing reaches `emit` once the cancellation was requested.
"""

from __future__ import annotations

import asyncio

import pytest

from rustasync import _asyncq_engine

# A run of about a second: 3 producers x 100 items, sleeps of 0-20 ms. A run
# that kept going after its cancellation would emit many more batches in the
# time the tests wait afterwards.
RUN = dict(seed=1, items_per_producer=100, sleep_scale=0.002)
# Longer than the longest sleep of a run task, so a run still going emits.
AFTERWARDS = 0.3


def test_cancelled_run_emits_nothing_more(run):
    async def main():
        calls: list[object] = []
        first = asyncio.Event()

        def emit(batch):
            calls.append(batch)
            first.set()

        task = asyncio.create_task(_asyncq_engine.run(3, 3, emit=emit, **RUN))
        await first.wait()
        task.cancel()
        seen = len(calls)
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(AFTERWARDS)
        return seen, len(calls)

    seen, total = run(main())
    assert total == seen


def test_run_cancelled_from_emit_emits_once(run):
    async def main():
        calls: list[object] = []

        def emit(batch):
            calls.append(batch)
            if len(calls) == 1:
                task.cancel()

        task = asyncio.create_task(_asyncq_engine.run(3, 3, emit=emit, **RUN))
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(AFTERWARDS)
        return len(calls)

    assert run(main()) == 1


def test_run_under_timeout_emits_nothing_after_it(run):
    async def main():
        calls: list[object] = []
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await _asyncq_engine.run(3, 3, emit=calls.append, **RUN)
        seen = len(calls)
        await asyncio.sleep(AFTERWARDS)
        return seen, len(calls)

    seen, total = run(main())
    assert total == seen


def test_uncancelled_run_still_emits_every_line(run):
    async def main():
        lines: list[str] = []
        summary = await _asyncq_engine.run(2, 2, seed=3, zero_sleep=True, emit=lines.extend)
        return summary, lines

    summary, lines = run(main())
    assert summary["lines"] == len(lines) > 0
    assert summary["produced"] == summary["consumed"]


def test_run_started_in_a_task_already_cancelling_still_emits(run):
    """The cancellation count is compared with its value when the run began."""

    async def main():
        task = asyncio.current_task()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.sleep(0)
        assert task.cancelling() == 1
        lines: list[str] = []
        await _asyncq_engine.run(1, 1, seed=3, zero_sleep=True, emit=lines.extend)
        return lines

    assert run(main())
