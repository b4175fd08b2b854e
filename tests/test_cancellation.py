"""Cancellation at every await point, driven by hypothesis.

A random program is a few worker tasks, each a list of operations: sleeps
(zero-delay ones included), gathers (of sleeps, coroutines, a failing child
and a child that takes iterations to give up when cancelled, with either
`return_exceptions`), and every queue method that waits (`put`, `get`,
`join`, `put_many`, `get_many`), some under `asyncio.timeout`. Cancellations
land at random virtual times on random workers, and at every loop-iteration
boundary of an operation: a worker cancelled `hops` iterations after it
started one (during a gather's `sleep(0)` children starting, yielding,
finishing and being reported, for instance). Some programs run under a
`TaskGroup` that one worker fails. The program runs on stock asyncio and
on rustasync, on a `VirtualTimeLoop` (deterministic: every deadline is
distinct), and the traces must be identical: each operation's outcome,
where each worker was cancelled, the queue's state, and the items left. On
rustasync it must also hold that no item is lost or duplicated and that
`join()` agrees with the items outstanding.

The Channel has no stock counterpart: random cancellations of its waiting
operations must lose and duplicate nothing, and its counters must agree.

Example counts are small by default; `HYPOTHESIS_PROFILE=thorough` runs many
more (see conftest.py).
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from queue_impls import RUST, STOCK
from test_queue_props import ref_get_many, ref_put_many

import rustasync

THOROUGH = os.environ.get("HYPOTHESIS_PROFILE") == "thorough"
EXAMPLES = 400 if THOROUGH else 30
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

DELAYS = [0.0, 0.001, 0.002, 0.005, 0.01]

op = st.one_of(
    st.tuples(st.just("sleep"), st.sampled_from(DELAYS)),
    st.tuples(
        st.just("gather"),
        st.lists(st.sampled_from(DELAYS), min_size=1, max_size=4),
        st.booleans(),  # return_exceptions
        st.booleans(),  # a failing child
        st.booleans(),  # a child that takes iterations to give up
    ),
    st.tuples(st.just("put"), st.integers(0, 3)),
    st.tuples(st.just("get"), st.integers(0, 3)),
    st.tuples(st.just("put_many"), st.integers(1, 3)),
    st.tuples(st.just("get_many"), st.integers(1, 3)),
    st.tuples(st.just("join"), st.just(0)),
    st.tuples(st.just("task_done"), st.just(0)),
)
worker = st.lists(
    st.tuples(op, st.sampled_from([None, None, 0.0, 0.001, 0.004])),  # (op, timeout)
    min_size=1,
    max_size=6,
)
program = st.fixed_dictionaries(
    {
        "maxsize": st.integers(0, 3),
        "workers": st.lists(worker, min_size=1, max_size=4),
        "cancels": st.lists(
            st.tuples(st.sampled_from([0.0, 0.0005, 0.0015, 0.003, 0.007]), st.integers(0, 3)),
            max_size=4,
        ),
        # (worker, operation, hops): cancel the worker `hops` loop iterations
        # after it starts that operation (0: before its first suspension).
        "hop_cancels": st.lists(
            st.tuples(st.integers(0, 3), st.integers(0, 5), st.integers(0, 6)),
            max_size=3,
        ),
        "taskgroup_fail": st.one_of(st.none(), st.sampled_from([0.0, 0.0025, 0.006])),
    }
)


class Impl:
    def __init__(self, mod, sleep, gather, put_many, get_many):
        self.mod, self.sleep, self.gather = mod, sleep, gather
        self.put_many, self.get_many = put_many, get_many


STOCK_IMPL = Impl(STOCK, asyncio.sleep, asyncio.gather, ref_put_many, ref_get_many)
RUST_IMPL = Impl(
    RUST,
    rustasync.sleep,
    rustasync.gather,
    lambda q, items: q.put_many(items),
    lambda q, n: q.get_many(n),
)


def outcome_of(exc: BaseException) -> str:
    return type(exc).__name__


# Virtual seconds after which a program that has not ended is stuck (every
# worker still running is cancelled at 0.05).
STUCK_AFTER = 1.0


async def run_program(impl: Impl, prog: dict[str, Any]) -> dict[str, Any]:
    """Run the program in a task; one that never ends is reported as stuck
    (a trace stock never gives) instead of hanging the test."""
    record: dict[str, Any] = {"log": [], "put_done": [], "got": [], "left": [], "uncertain": []}
    body = asyncio.ensure_future(program_body(impl, prog, record))
    await asyncio.wait([body], timeout=STUCK_AFTER)
    if body.done():
        body.result()
    else:
        record["log"].append(("stuck",))
    return record


async def program_body(impl: Impl, prog: dict[str, Any], record: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    q = impl.mod.Queue(prog["maxsize"])
    log: list[Any] = record["log"]
    put_done: list[int] = record["put_done"]  # items whose put returned
    got: list[int] = record["got"]
    uncertain: list[int] = record["uncertain"]  # items of a put_many that was interrupted
    counter = iter(range(1, 10**6))
    eps = iter(i * 1e-6 for i in range(1, 10**6))  # keeps every deadline distinct

    def delay(d: float) -> float:
        """`d`, made distinct from every other deadline; zero stays zero."""
        return d + next(eps) if d else 0

    async def child(d: float, v: int) -> int:
        await impl.sleep(delay(d))
        return v

    async def failing(d: float) -> None:
        await impl.sleep(delay(d))
        raise KeyError("child")

    async def stubborn(d: float, v: int) -> int:
        try:
            await impl.sleep(delay(d))
        except asyncio.CancelledError:
            for _ in range(2):
                await impl.sleep(0)
        return v

    async def do(w: int, i: int, step: tuple[Any, ...]) -> Any:
        kind = step[0]
        if kind == "sleep":
            return await impl.sleep(delay(step[1]), (w, i))
        if kind == "gather":
            _, delays, ret_exc, fail, slow_to_cancel = step
            aws = [impl.sleep(delay(d), j) if j % 2 else child(d, j) for j, d in enumerate(delays)]
            if fail:
                aws.append(failing(delays[0]))
            if slow_to_cancel:
                aws.append(stubborn(delays[-1], 99))
            res = await impl.gather(*aws, return_exceptions=ret_exc)
            return [r if isinstance(r, int) else outcome_of(r) for r in res]
        if kind == "put":
            item = next(counter)
            await q.put(item)
            put_done.append(item)
            return item
        if kind == "get":
            item = await q.get()
            got.append(item)
            return item
        if kind == "put_many":
            items = [next(counter) for _ in range(step[1])]
            try:
                await impl.put_many(q, items)
            except BaseException:
                uncertain.extend(items)
                raise
            put_done.extend(items)
            return items
        if kind == "get_many":
            items = await impl.get_many(q, step[1])
            got.extend(items)
            return items
        if kind == "join":
            return await q.join()
        if kind == "task_done":
            q.task_done()
            return None
        raise AssertionError(kind)

    def cancel_after(hops: int, task: asyncio.Task[Any]) -> None:
        if hops:
            loop.call_soon(cancel_after, hops - 1, task)
        else:
            task.cancel()

    async def work(w: int, steps) -> None:
        for i, (step, timeout) in enumerate(steps):
            for target, op, hops in prog["hop_cancels"]:
                if (target % len(prog["workers"]), op) == (w, i):
                    cancel_after(hops, asyncio.current_task())
            try:
                if timeout is None:
                    res = await do(w, i, step)
                else:
                    async with asyncio.timeout(timeout + next(eps)):
                        res = await do(w, i, step)
                log.append((w, i, step[0], "ok", res))
            except (TimeoutError, KeyError, ValueError) as e:
                log.append((w, i, step[0], outcome_of(e)))
            except asyncio.CancelledError:
                log.append((w, i, step[0], "cancelled"))
                raise
            log.append((w, i, "qsize", q.qsize()))

    async def fail_group(d: float) -> None:
        await impl.sleep(d + next(eps))
        raise ValueError("group failure")

    start = loop.time()
    tasks: list[asyncio.Task[None]] = []

    def reap() -> None:
        """Workers still blocked (a get nobody serves) are cancelled at the
        end of the program, which also keeps the virtual clock moving."""
        log.append(("reaped", [i for i, t in enumerate(tasks) if not t.done()]))
        for t in tasks:
            t.cancel()

    loop.call_at(start + 0.05, reap)
    if prog["taskgroup_fail"] is None:
        tasks = [asyncio.ensure_future(work(w, s)) for w, s in enumerate(prog["workers"])]
        for t, index in prog["cancels"]:
            loop.call_at(start + t + next(eps), tasks[index % len(tasks)].cancel)
        results = await asyncio.gather(*tasks, return_exceptions=True)
        log.append(("workers", [outcome_of(r) if r is not None else "ok" for r in results]))
    else:
        try:
            async with asyncio.TaskGroup() as tg:
                for w, s in enumerate(prog["workers"]):
                    tasks.append(tg.create_task(work(w, s)))
                tg.create_task(fail_group(prog["taskgroup_fail"]))
                for t, index in prog["cancels"]:
                    loop.call_at(start + t + next(eps), tasks[index % len(tasks)].cancel)
        except BaseExceptionGroup as eg:
            log.append(("group", sorted(outcome_of(e) for e in eg.exceptions)))
        log.append(("workers", ["cancelled" if t.cancelled() else "done" for t in tasks]))

    log.append(("end", str(q), q.qsize()))
    left = record["left"]
    while not q.empty():
        left.append(q.get_nowait())
    log.append(("left", left))


def run_virtual(impl: Impl, prog: dict[str, Any]) -> dict[str, Any]:
    # Not asyncio.Runner: closing it waits for every task to end, and a stuck
    # one never does; it is left pending instead.
    loop = rustasync.VirtualTimeLoop()
    try:
        return loop.run_until_complete(run_program(impl, prog))
    finally:
        loop.close()


def check_items(r: dict[str, Any]) -> None:
    seen = Counter(r["got"]) + Counter(r["left"])
    dup = [x for x, n in seen.items() if n > 1]
    assert not dup, f"items seen twice: {dup}"
    confirmed = set(r["put_done"])
    assert confirmed <= seen.keys(), f"items lost: {confirmed - seen.keys()}"
    assert seen.keys() <= confirmed | set(r["uncertain"]), "items from nowhere"


@SETTINGS
@given(prog=program)
def test_random_cancellation_matches_asyncio(prog) -> None:
    stock = run_virtual(STOCK_IMPL, prog)
    rust = run_virtual(RUST_IMPL, prog)
    if prog["taskgroup_fail"] is None:
        assert rust["log"] == stock["log"]
    else:
        # A TaskGroup cancels its tasks in set order (by address), which
        # differs from run to run: compare the entries, not their order.
        assert Counter(map(repr, rust["log"])) == Counter(map(repr, stock["log"]))
    check_items(rust)
    check_items(stock)


# ----------------------------------------------------------------- Channel

channel_op = st.one_of(
    st.tuples(st.just("send"), st.integers(1, 1)),
    st.tuples(st.just("send_many"), st.integers(1, 4)),
    st.tuples(st.just("recv"), st.integers(1, 1)),
    st.tuples(st.just("recv_many"), st.integers(1, 4)),
    st.tuples(st.just("iterate"), st.integers(1, 3)),
    st.tuples(st.just("sleep"), st.sampled_from(DELAYS)),
)
channel_program = st.fixed_dictionaries(
    {
        "maxsize": st.integers(0, 3),
        "workers": st.lists(
            st.lists(
                st.tuples(channel_op, st.sampled_from([None, None, 0.0, 0.001, 0.004])),
                min_size=1,
                max_size=6,
            ),
            min_size=1,
            max_size=4,
        ),
        "cancels": st.lists(
            st.tuples(st.sampled_from([0.0, 0.0005, 0.0015, 0.003, 0.007]), st.integers(0, 3)),
            max_size=4,
        ),
        "close_at": st.one_of(st.none(), st.sampled_from([0.0, 0.002, 0.008])),
    }
)


async def run_channel_program(prog: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    ch = rustasync.Channel(prog["maxsize"])
    counter = iter(range(1, 10**6))
    eps = iter(i * 1e-6 for i in range(1, 10**6))
    sent: list[int] = []
    uncertain: list[int] = []
    got: list[int] = []

    async def do(step) -> None:
        kind, n = step
        if kind == "send":
            item = next(counter)
            await ch.send(item)
            sent.append(item)
        elif kind == "send_many":
            items = [next(counter) for _ in range(n)]
            try:
                await ch.send_many(items)
            except BaseException:
                uncertain.extend(items)
                raise
            sent.extend(items)
        elif kind == "recv":
            got.append(await ch.recv())
        elif kind == "recv_many":
            got.extend(await ch.recv_many(n))
        elif kind == "iterate":
            async for x in ch:
                got.append(x)
                if len(got) % n == 0:
                    break
        else:
            await rustasync.sleep(n + next(eps))

    async def work(steps) -> None:
        for step, timeout in steps:
            try:
                if timeout is None:
                    await do(step)
                else:
                    async with asyncio.timeout(timeout + next(eps)):
                        await do(step)
            except (TimeoutError, rustasync.ChannelClosed):
                pass

    start = loop.time()
    tasks = [asyncio.ensure_future(work(s)) for s in prog["workers"]]
    loop.call_at(start + 0.05, lambda: [t.cancel() for t in tasks])
    for t, index in prog["cancels"]:
        loop.call_at(start + t + next(eps), tasks[index % len(tasks)].cancel)
    if prog["close_at"] is not None:
        loop.call_at(start + prog["close_at"] + next(eps), ch.close)
    # Workers blocked forever (a recv with nobody sending) are cancelled at
    # the end of the program.
    await asyncio.gather(*tasks, return_exceptions=True)

    left = []
    while True:
        try:
            left.append(ch.recv_nowait())
        except (asyncio.QueueEmpty, rustasync.ChannelClosed):
            break
    stats = ch.stats()
    seen = Counter(got) + Counter(left)
    assert not [x for x, n in seen.items() if n > 1], "an item was received twice"
    assert set(sent) <= seen.keys(), f"items lost: {set(sent) - seen.keys()}"
    assert seen.keys() <= set(sent) | set(uncertain), "items from nowhere"
    assert stats["qsize"] == 0
    assert stats["sent"] == stats["received"] == len(got) + len(left)
    assert stats["waiting_senders"] == stats["waiting_receivers"] == 0


@SETTINGS
@given(prog=channel_program)
def test_channel_random_cancellation_loses_nothing(prog) -> None:
    with asyncio.Runner(loop_factory=rustasync.VirtualTimeLoop) as runner:
        runner.run(run_channel_program(prog))
