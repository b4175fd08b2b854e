"""Bad input, everywhere: every public callable with wrong types, wrong
values, the wrong loop, no loop, and after close/shutdown.

Two tables:

* ``PARITY``: operations asyncio also has. Each case runs the same body on
  stock asyncio and on rustasync, in the same test, and both must observe
  the same thing: the same exception class at the same step, and the same
  queue state (``str(q)``: items, waiters, unfinished tasks, shutdown)
  before and after.
* ``RUST_ONLY``: what asyncio lacks (``get_many``, ``task_done(n)``, ...) or
  checks later. Each must raise ``TypeError``/``ValueError`` naming the
  argument, and leave the object as it was.

The CLI table runs ``python -m rustasync`` with misuse; each must print a
usage message and exit with status 2. Every case adds one to the
``bad inputs tried`` counter printed at the end of the session.
"""

from __future__ import annotations

import asyncio
import decimal
import fractions
import math
import os
import re
import subprocess
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from _tally import TALLY
from queue_impls import RUST, STOCK

import rustasync

QUEUE_KINDS = ["Queue", "LifoQueue", "PriorityQueue"]
NAN, INF = math.nan, math.inf
HUGE = 10**100


def tried(n: int = 1) -> None:
    TALLY["bad inputs tried"] += n


class Mod:
    """The operations under test, for one implementation."""

    def __init__(self, name: str, queues: Any, sleep: Any, gather: Any) -> None:
        self.name = name
        self.q = queues
        self.sleep = sleep
        self.gather = gather


STOCK_MOD = Mod("asyncio", STOCK, asyncio.sleep, asyncio.gather)
RUST_MOD = Mod("rustasync", RUST, rustasync.sleep, rustasync.gather)


def outcome(exc: BaseException | None) -> str:
    if exc is None:
        return "ok"
    return type(exc).__name__


def call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> str:
    """Call and name the outcome: "ok" or the exception class."""
    try:
        fn(*args, **kwargs)
    except Exception as e:
        return outcome(e)
    return "ok"


async def wait(make: Callable[[], Awaitable[Any]], timeout: float | None = None) -> str:
    """Create the awaitable and await it (both inside the probe, since
    asyncio checks when awaited and rustasync may check when called)."""
    try:
        if timeout is None:
            await make()
        else:
            async with asyncio.timeout(timeout):
                await make()
    except Exception as e:
        return outcome(e)
    return "ok"


# ---------------------------------------------------------------- sleep


# Decimal is left out: stock asyncio rejects it on its own loop (float + Decimal)
# but uvloop accepts it; rustasync rejects it (RUST_ONLY below).
SLEEP_BAD_TYPES = ["1", b"1", None, [], {}, object(), 1j]
SLEEP_ODD_VALUES = [0, -1, -0.0, -INF, -HUGE, fractions.Fraction(1, 1000), False, 1e-300]
SLEEP_FOREVER = [INF, HUGE, 1e300]


async def sleep_bad_types(m: Mod) -> list[str]:
    return [await wait(lambda d=d: m.sleep(d)) for d in SLEEP_BAD_TYPES]


async def sleep_odd_values(m: Mod) -> list[str]:
    return [await wait(lambda d=d: m.sleep(d, "r")) for d in SLEEP_ODD_VALUES]


async def sleep_forever_values(m: Mod) -> list[str]:
    return [await wait(lambda d=d: m.sleep(d), timeout=0.01) for d in SLEEP_FOREVER]


async def sleep_bad_arity(m: Mod) -> list[str]:
    return [
        await wait(lambda: m.sleep()),
        await wait(lambda: m.sleep(0, 1, 2)),
        await wait(lambda: m.sleep(0, result=1, extra=2)),
        await wait(lambda: m.sleep(delay=0, result=3)),
    ]


async def sleep_coroutine_misuse(m: Mod) -> list[str]:
    out = []
    s = m.sleep(0)
    out.append(call(s.send, 1))  # non-None to a just-started coroutine
    s.close()
    s = m.sleep(0)
    out.append(call(s.throw, 1))  # not an exception
    s.close()
    s = m.sleep(0)
    await s
    out.append(await wait(lambda: s))  # awaited twice
    s = m.sleep(0.001)
    s.close()
    out.append(await wait(lambda: s))  # awaited after close
    s = m.sleep(0.001)
    out.append(call(s.throw, ValueError))  # thrown in before the start
    out.append(await wait(lambda: s))
    return out


# ---------------------------------------------------------------- gather


async def gather_bad_arguments(m: Mod) -> list[str]:
    out = []
    for bad in (1, None, "abc", b"x", [1], object()):
        out.append(await wait(lambda bad=bad: m.gather(bad)))
    out.append(await wait(lambda: m.gather(foo=1)))
    return out


async def gather_truthy_return_exceptions(m: Mod) -> list[Any]:
    async def boom():
        raise KeyError("k")

    out: list[Any] = []
    for flag in (1, 0, None, "", "yes", [], [0]):
        try:
            res = await m.gather(boom(), m.sleep(0, "s"), return_exceptions=flag)
            out.append([type(r).__name__ for r in res])
        except Exception as e:
            out.append(outcome(e))
    return out


async def gather_future_of_another_loop(m: Mod) -> list[str]:
    other = asyncio.new_event_loop()
    try:
        fut = other.create_future()
        # A lone future of another loop: asyncio builds the outer future on
        # that loop and fails when the Task awaits it (RuntimeError);
        # rustasync refuses it at once (ValueError, asyncio's message for
        # the mixed case). Only the mixed case is compared.
        s = m.sleep(0)
        try:
            return [await wait(lambda: m.gather(s, fut))]
        finally:
            s.close()  # rustasync leaves a rejected call's arguments untouched
    finally:
        other.close()


async def gather_awaited_twice(m: Mod) -> list[Any]:
    g = m.gather(m.sleep(0, 1))
    return [await g, await g, g.done(), g.cancel()]


# ---------------------------------------------------------------- queues

MAXSIZES = [0, -1, 1, 2.5, HUGE, -HUGE, INF, -INF, NAN, True, "3", None, 1j, [], 2.0]


def each_kind(body):
    """Run `body(m, cls)` for the three queue classes."""

    async def run_all(m: Mod) -> list[Any]:
        return [await body(m, getattr(m.q, kind)) for kind in QUEUE_KINDS]

    run_all.__name__ = body.__name__
    return run_all


@each_kind
async def queue_maxsize_values(m: Mod, cls: Any) -> list[Any]:
    out = []
    for maxsize in MAXSIZES:

        async def fill(maxsize=maxsize):
            q = cls(maxsize)
            for i in range(3):
                q.put_nowait(i)

        out.append(await wait(fill))
    return out


@each_kind
async def queue_constructor_arity(m: Mod, cls: Any) -> list[str]:
    return [call(cls, 1, 2), call(cls, foo=1), call(cls, maxsize=1, extra=2)]


@each_kind
async def queue_nowait_limits(m: Mod, cls: Any) -> list[str]:
    q = cls(1)
    out = [str(q), call(q.get_nowait), str(q)]
    q.put_nowait(1)
    out += [call(q.put_nowait, 2), str(q)]
    out += [call(q.task_done), call(q.task_done), str(q)]
    out += [call(q.put_nowait), call(q.get_nowait, 1), call(q.qsize, 1), str(q)]
    return out


@each_kind
async def queue_task_done_too_many(m: Mod, cls: Any) -> list[str]:
    q = cls()
    out = [call(q.task_done), str(q)]
    q.put_nowait(1)
    q.get_nowait()
    out += [call(q.task_done), call(q.task_done), str(q), await wait(q.join)]
    return out


@each_kind
async def queue_method_arity(m: Mod, cls: Any) -> list[str]:
    q = cls()
    return [
        await wait(lambda: q.put()),
        await wait(lambda: q.put(1, 2)),
        await wait(lambda: q.get(1)),
        await wait(lambda: q.join(1)),
        call(q.shutdown, False, 1),
        str(q),
    ]


@each_kind
async def queue_after_shutdown(m: Mod, cls: Any) -> list[str]:
    if not m.q.has_shutdown:
        pytest.skip("stock asyncio has no Queue.shutdown here")
    q = cls()
    q.put_nowait(1)
    q.shutdown()
    out = [str(q), call(q.put_nowait, 2), await wait(lambda: q.put(2)), str(q)]
    out += [await wait(q.get), await wait(q.get), call(q.get_nowait), str(q)]
    out += [call(q.shutdown), call(q.shutdown, True), call(q.task_done), call(q.task_done)]
    out += [await wait(q.join), str(q)]
    q = cls()
    q.put_nowait(1)
    q.shutdown(True)
    out += [str(q), await wait(q.get), call(q.get_nowait), call(q.task_done), await wait(q.join)]
    return out


@each_kind
async def queue_op_reused_or_closed(m: Mod, cls: Any) -> list[str]:
    q = cls()
    q.put_nowait(1)
    op = q.get()
    await op
    out = [await wait(lambda: op), str(q)]
    op = q.get()
    op.close()
    out += [await wait(lambda: op), str(q)]
    op = q.put(5)
    op.close()
    out += [await wait(lambda: op), str(q)]
    op = q.put(5)
    out += [call(op.throw, 1), call(op.send, 1), str(q)]
    op.close()
    return out


@each_kind
async def queue_priority_incomparable(m: Mod, cls: Any) -> list[str]:
    q = cls()
    q.put_nowait(1)
    return [call(q.put_nowait, 1j if cls.__name__ == "PriorityQueue" else object())]


PARITY = [
    sleep_bad_types,
    sleep_odd_values,
    sleep_forever_values,
    sleep_bad_arity,
    sleep_coroutine_misuse,
    gather_bad_arguments,
    gather_truthy_return_exceptions,
    gather_future_of_another_loop,
    gather_awaited_twice,
    queue_maxsize_values,
    queue_constructor_arity,
    queue_nowait_limits,
    queue_task_done_too_many,
    queue_method_arity,
    queue_after_shutdown,
    queue_op_reused_or_closed,
    queue_priority_incomparable,
]


def count_probes(observed: list[Any]) -> int:
    """The calls made (state snapshots, which start with "<", are not)."""
    return sum(
        count_probes(x) if isinstance(x, list) else int(not str(x).startswith("<"))
        for x in observed
    )


@pytest.mark.parametrize("body", PARITY, ids=lambda b: b.__name__)
def test_same_outcome_as_asyncio(body, run) -> None:
    stock = run(body(STOCK_MOD))
    rust = run(body(RUST_MOD))
    assert rust == stock
    tried(count_probes(rust))


@pytest.mark.parametrize("kind", QUEUE_KINDS)
def test_queue_bound_to_another_loop(kind, loop_factory) -> None:
    """A queue whose getters waited on one loop refuses to wait on another,
    with asyncio's RuntimeError, and is left as it was."""

    def scenario(m: Mod) -> list[str]:
        q = getattr(m.q, kind)()

        async def first():
            t = asyncio.create_task(q.get())
            await asyncio.sleep(0)
            q.put_nowait(1)
            await t

        async def second():
            before = str(q)
            out = [await wait(q.get), call(q.put_nowait, 2), await wait(q.get)]
            out += [await wait(q.get), before, str(q)]
            return out

        for coro in (first(),):
            with asyncio.Runner(loop_factory=loop_factory) as r:
                r.run(coro)
        with asyncio.Runner(loop_factory=loop_factory) as r:
            return r.run(second())

    rust = scenario(RUST_MOD)
    assert rust == scenario(STOCK_MOD)
    assert rust[0] == "RuntimeError"
    tried(4)


# ------------------------------------------------- what asyncio lacks


def queue_state(q: Any) -> str:
    return str(q)


RUST_ONLY: list[tuple[str, Callable[[Any], Any], type[Exception], str]] = []


def rust_only(name: str, exc: type[Exception], arg: str):
    def register(fn):
        RUST_ONLY.append((name, fn, exc, arg))
        return fn

    return register


for _bad in (NAN,):
    rust_only(f"sleep({_bad!r})", ValueError, "delay")(lambda q, d=_bad: rustasync.sleep(d))
for _bad in ("1", None, object(), 1j, decimal.Decimal("1")):
    rust_only(f"sleep({_bad!r})", TypeError, "delay")(lambda q, d=_bad: rustasync.sleep(d))
for _kind in QUEUE_KINDS:
    for _bad in ("3", None, 1j, [], b"1"):
        rust_only(f"{_kind}({_bad!r})", TypeError, "maxsize")(
            lambda q, k=_kind, b=_bad: getattr(rustasync, k)(b)
        )
for _meth in ("get_many", "get_nowait_many"):
    for _bad in (0, -1, -(2**63), -HUGE):
        rust_only(f"{_meth}({_bad})", ValueError, "max_items")(
            lambda q, m=_meth, b=_bad: getattr(q, m)(b)
        )
    for _bad in ("2", 2.0, None, [1]):
        rust_only(f"{_meth}({_bad!r})", TypeError, "max_items")(
            lambda q, m=_meth, b=_bad: getattr(q, m)(b)
        )
# `n` is named when it is the wrong kind of number; a count larger than the
# unfinished tasks is asyncio's "called too many times".
for _bad in (0, -1, -(2**63), 2**63 - 1, -HUGE, HUGE):
    rust_only(f"task_done({_bad})", ValueError, r"\bn\b|too many times")(
        lambda q, b=_bad: q.task_done(b)
    )
for _bad in ("1", 1.0, None):
    rust_only(f"task_done({_bad!r})", TypeError, r"\bn\b")(lambda q, b=_bad: q.task_done(b))
for _bad in (5, None, 1.5):
    rust_only(f"put_many({_bad!r})", TypeError, "items")(lambda q, b=_bad: q.put_many(b))


def _rust_only_params():
    for name, fn, exc, arg in RUST_ONLY:
        key = name.replace(repr(HUGE), "HUGE").replace(str(HUGE), "HUGE")
        yield pytest.param(fn, exc, arg, id=key)


@pytest.mark.parametrize("fn, exc, arg", list(_rust_only_params()))
def test_rust_only_error_names_the_argument(fn, exc, arg) -> None:
    tried()
    q = rustasync.Queue(3)
    q.put_nowait(1)
    q.put_nowait(2)
    before = queue_state(q)
    with pytest.raises(exc) as info:
        op = fn(q)
        if hasattr(op, "close"):
            op.close()
    assert re.search(arg, str(info.value)), str(info.value)
    assert queue_state(q) == before


@pytest.mark.parametrize("flag", [1, "yes", None])
def test_shutdown_immediate_is_read_for_truth(flag, run) -> None:
    tried()
    q = rustasync.Queue()
    q.put_nowait(1)
    q.shutdown(flag)
    assert q.qsize() == (0 if flag else 1)


@pytest.mark.parametrize("n", [2**63, HUGE])
def test_huge_batch_sizes_take_everything(n, run) -> None:
    tried()

    async def main():
        q = rustasync.Queue()
        await q.put_many([1, 2, 3])
        return await q.get_many(n), (await q.put_many([4]), q.get_nowait_many(n))[1]

    assert run(main()) == ([1, 2, 3], [4])


def test_put_many_iterable_raising_midway_puts_nothing(run) -> None:
    def items():
        yield 1
        yield 2
        raise KeyError("midway")

    async def main():
        q = rustasync.Queue()
        with pytest.raises(KeyError):
            q.put_many(items())
        return q.qsize(), str(q)

    assert run(main()) == (0, "<Queue maxsize=0>")
    tried()


def test_lone_future_of_another_loop_is_refused_at_once() -> None:
    """asyncio binds the gather to the future's loop and fails only when a
    Task awaits it; rustasync raises ValueError before creating anything."""

    async def main():
        other = asyncio.new_event_loop()
        try:
            with pytest.raises(ValueError, match="different loop"):
                rustasync.gather(other.create_future())
        finally:
            other.close()

    asyncio.run(main())
    tried()


def test_queue_ops_with_no_running_loop() -> None:
    """asyncio fails with AttributeError here (it binds the queue to None);
    rustasync raises RuntimeError and stays usable."""
    q = rustasync.Queue(1)
    for make in (q.get, lambda: q.get_many(2), q.join):
        if make == q.join:
            q.put_nowait(1)
        op = make()
        with pytest.raises(RuntimeError, match="no running event loop"):
            op.send(None)
        op.close()
        tried()
    op = q.put(2)
    with pytest.raises(RuntimeError, match="no running event loop"):
        op.send(None)
    op.close()
    tried()
    assert str(q) == "<Queue maxsize=1 _queue=[1] tasks=1>"
    with pytest.raises(RuntimeError, match="no running event loop"):
        rustasync.sleep(1).send(None)
    # gather() with no running loop follows asyncio's rules (test_gather.py).
    tried()


def test_install_run_misuse() -> None:
    with pytest.raises(RuntimeError, match="not installed"):
        rustasync.uninstall()
    with pytest.raises(TypeError):
        rustasync.install(1)
    with pytest.raises(TypeError):
        rustasync.uninstall(1)
    for bad in (1, None, "main"):
        with pytest.raises(ValueError, match="coroutine"):
            asyncio.run(bad)
        with pytest.raises(ValueError, match="coroutine"):
            rustasync.run(bad)

    async def main():
        return 1

    coro = main()
    with pytest.raises(ValueError, match="not both"):
        rustasync.run(coro, virtual_time=True, loop_factory=asyncio.new_event_loop)
    coro.close()
    with pytest.raises(TypeError):
        rustasync.run(main, 1)
    assert not rustasync._install.is_installed()
    tried(11)


# ------------------------------------------------------------------ CLI

CLI_MISUSE = [
    ["run", "--loop"],
    ["run", "--bogus", "x.py"],
    ["demo", "--width", "wide"],
    ["demo", "--bogus"],
    ["bench", "--rounds", "0"],
    ["bench", "--rounds", "x"],
    ["bench", "--loops", "bogus"],
    ["bench", "--only", "nothing"],
    ["stress", "--seconds", "-1"],
    ["stress", "--seconds", "nan"],
    ["stress", "--seconds", "abc"],
    ["stress", "--threads", "0"],
    ["stress", "--loops", "-3"],
    ["stress", "--bogus"],
    ["stress", "extra"],
]


def test_cli_misuse_exits_2_with_usage() -> None:
    """All at once, in parallel subprocesses (those in test_runner.py's
    test_cli_misuse_prints_usage_and_exits_2 are not repeated)."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    procs = [
        (
            argv,
            subprocess.Popen(
                [sys.executable, "-m", "rustasync", *argv],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            ),
        )
        for argv in CLI_MISUSE
    ]
    failures = []
    for argv, p in procs:
        out, err = p.communicate(timeout=60)
        if p.returncode != 2 or "usage:" not in err or "Traceback" in err:
            failures.append((argv, p.returncode, err[-500:]))
    tried(len(CLI_MISUSE))
    assert not failures


# -------------------------------------------------------------- Channel


def channel_state(ch: rustasync.Channel) -> dict[str, Any]:
    return dict(ch.stats())


CHANNEL_CASES: list[tuple[str, Callable[[Any], Any], type[Exception], str]] = []
for _bad in ("3", 1j, [], 2.5, NAN, INF):
    CHANNEL_CASES.append(
        (f"Channel({_bad!r})", lambda ch, b=_bad: rustasync.Channel(b), TypeError, "maxsize")
    )
for _meth in ("recv_many", "recv_many_blocking"):
    for _bad in (0, -1, -(2**63)):
        CHANNEL_CASES.append(
            (
                f"{_meth}({_bad})",
                lambda ch, m=_meth, b=_bad: getattr(ch, m)(b),
                ValueError,
                "max_items",
            )
        )
    for _bad in ("2", None, 2.0, NAN):
        CHANNEL_CASES.append(
            (
                f"{_meth}({_bad!r})",
                lambda ch, m=_meth, b=_bad: getattr(ch, m)(b),
                TypeError,
                "max_items",
            )
        )
for _meth, _args in (
    ("send_blocking", (9,)),
    ("recv_blocking", ()),
    ("send_many_blocking", ([9],)),
    ("recv_many_blocking", (1,)),
):
    for _bad in (-1, -INF, NAN, -1e-300):
        CHANNEL_CASES.append(
            (
                f"{_meth}(timeout={_bad!r})",
                lambda ch, m=_meth, a=_args, b=_bad: getattr(ch, m)(*a, timeout=b),
                ValueError,
                "timeout",
            )
        )
    for _bad in ("1", [], 1j):
        CHANNEL_CASES.append(
            (
                f"{_meth}(timeout={_bad!r})",
                lambda ch, m=_meth, a=_args, b=_bad: getattr(ch, m)(*a, timeout=b),
                TypeError,
                "timeout",
            )
        )
for _meth in ("send_many", "send_many_blocking"):
    for _bad in (5, None):
        CHANNEL_CASES.append(
            (
                f"{_meth}({_bad!r})",
                lambda ch, m=_meth, b=_bad: getattr(ch, m)(b),
                TypeError,
                "items",
            )
        )


def _channel_params():
    for name, fn, exc, arg in CHANNEL_CASES:
        yield pytest.param(fn, exc, arg, id=name)


@pytest.mark.parametrize("fn, exc, arg", list(_channel_params()))
def test_channel_error_names_the_argument(fn, exc, arg) -> None:
    tried()
    ch = rustasync.Channel(2)
    ch.send_nowait(1)
    before = channel_state(ch)
    with pytest.raises(exc) as info:
        op = fn(ch)
        if hasattr(op, "close"):
            op.close()
    assert arg in str(info.value), str(info.value)
    assert channel_state(ch) == before


@pytest.mark.parametrize("what", ["maxsize", "-maxsize", "max_items"])
def test_channel_huge_ints(what) -> None:
    tried()
    if what == "max_items":
        ch = rustasync.Channel()
        ch.send_nowait(1)
        assert ch.recv_many_blocking(HUGE, timeout=0) == [1]
    else:
        ch = rustasync.Channel(HUGE if what == "maxsize" else -HUGE)
        assert not ch.full()


def test_channel_after_close(run) -> None:
    async def main():
        ch = rustasync.Channel(2)
        ch.send_nowait(1)
        assert ch.close() is True
        out = [
            ch.close(),
            call(ch.send_nowait, 2),
            await wait(lambda: ch.send(2)),
            await wait(lambda: ch.send_many([2, 3])),
            call(ch.send_blocking, 2, timeout=0),
            call(ch.send_many_blocking, [2], timeout=0),
            channel_state(ch)["qsize"],
            await ch.recv(),
            await wait(ch.recv),
            await wait(lambda: ch.recv_many(3)),
            call(ch.recv_nowait),
            call(ch.recv_blocking, timeout=0),
            call(ch.recv_many_blocking, 2, timeout=0),
            [x async for x in ch],
        ]
        return out

    closed = "ChannelClosed"
    assert run(main()) == [False, closed, closed, closed, closed, closed, 1, 1] + [closed] * 5 + [
        []
    ]
    tried(13)


def test_channel_limits_and_no_loop() -> None:
    ch = rustasync.Channel(1)
    assert call(ch.recv_nowait) == "QueueEmpty"
    assert call(ch.recv_blocking, timeout=0) == "TimeoutError"
    assert call(ch.recv_many_blocking, 3, timeout=0.001) == "TimeoutError"
    ch.send_nowait(1)
    assert call(ch.send_nowait, 2) == "QueueFull"
    assert call(ch.send_blocking, 2, timeout=0) == "TimeoutError"
    assert call(ch.send_many_blocking, [2, 3], timeout=0.001) == "TimeoutError"
    before = channel_state(ch)
    op = ch.send(2)  # would wait: needs a running loop
    assert call(op.send, None) == "RuntimeError"
    op.close()
    op = rustasync.Channel().recv()
    assert call(op.send, None) == "RuntimeError"
    op.close()
    assert channel_state(ch) == before
    assert ch.recv_nowait() == 1
    tried(9)
