"""VirtualTimeLoop: the clock skips idle waits, and the order of events stays real time's.

The definition is in docs/running.md. Programs made of timers read exact
deadlines; programs with executor work, busy loops or CPU-bound callbacks are
run both on asyncio's own loop, in real time, and on a VirtualTimeLoop, and
must record the same events in the same order.
"""

from __future__ import annotations

import asyncio
import heapq
import socket
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rustasync
from rustasync import VirtualTimeLoop


def vrun(coro):
    return rustasync.run(coro, virtual_time=True)


def test_clock_starts_at_zero_and_jumps_to_each_timer() -> None:
    async def main():
        loop = asyncio.get_running_loop()
        readings = [loop.time()]
        await asyncio.sleep(5)
        readings.append(loop.time())
        await asyncio.sleep(0.25)
        readings.append(loop.time())
        return readings

    began = time.monotonic()
    assert vrun(main()) == [0.0, 5.0, 5.25]
    assert time.monotonic() - began < 1.0


def test_a_day_of_sleeps_takes_no_time() -> None:
    async def main():
        await asyncio.gather(*(asyncio.sleep(3600 * i) for i in range(25)))
        return asyncio.get_running_loop().time()

    began = time.monotonic()
    assert vrun(main()) == 24 * 3600.0
    assert time.monotonic() - began < 1.0


def test_timers_fire_in_deadline_order_ties_in_scheduling_order() -> None:
    fired = []

    async def main():
        loop = asyncio.get_running_loop()
        for name, delay in [("a", 2), ("b", 1), ("c", 2), ("d", 1), ("e", 0), ("f", 2)]:
            loop.call_later(delay, lambda n=name: fired.append((n, loop.time())))
        loop.call_at(1.0, lambda: fired.append(("g", loop.time())))
        await asyncio.sleep(3)

    vrun(main())
    assert fired == [
        ("e", 0.0),
        ("b", 1.0),
        ("d", 1.0),
        ("g", 1.0),
        ("a", 2.0),
        ("c", 2.0),
        ("f", 2.0),
    ]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 3)), min_size=1, max_size=30))
def test_every_timer_fires_at_its_deadline_in_order(plan) -> None:
    """Timers (some scheduling more timers) fire at their deadline, ties first-come."""
    fired: list[tuple[float, int]] = []

    async def main():
        loop = asyncio.get_running_loop()
        seq = iter(range(10_000))
        expected = []
        done = loop.create_future()
        pending = [0]

        def schedule(delay, children):
            n = next(seq)
            when = loop.time() + delay
            expected.append((when, n))
            pending[0] += 1
            loop.call_at(when, fire, n, children)

        def fire(n, children):
            fired.append((loop.time(), n))
            for _ in range(children):
                schedule(children, 0)
            pending[0] -= 1
            if not pending[0]:
                done.set_result(None)

        for delay, children in plan:
            schedule(delay, children)
        await done
        return expected

    expected = vrun(main())
    assert fired == sorted(expected)


def test_cancelled_timers_do_not_move_the_clock() -> None:
    async def main():
        loop = asyncio.get_running_loop()
        loop.call_later(100, lambda: None).cancel()
        await asyncio.sleep(1)
        return loop.time()

    assert vrun(main()) == 1.0


def test_timeout_and_wait_for_follow_the_clock() -> None:
    async def main():
        loop = asyncio.get_running_loop()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(30):
                await asyncio.sleep(3600)
        assert loop.time() == 30.0
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.Event().wait(), 12)
        return loop.time()

    assert vrun(main()) == 42.0


def test_ready_io_is_handled_before_the_clock_jumps() -> None:
    async def main():
        loop = asyncio.get_running_loop()
        a, b = socket.socketpair()
        a.setblocking(False)
        events = []
        loop.call_later(10, lambda: events.append(("timer", loop.time())))
        b.send(b"x")
        await asyncio.sleep(0)  # the data is already there when the loop goes idle
        loop.add_reader(a, lambda: events.append(("readable", loop.time())) or a.recv(1))
        await asyncio.sleep(20)
        loop.remove_reader(a)
        a.close()
        b.close()
        return events

    assert vrun(main()) == [("readable", 0.0), ("timer", 10.0)]


def test_without_timers_the_loop_waits_for_threads_at_real_speed() -> None:
    async def main():
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        threading.Timer(0.05, loop.call_soon_threadsafe, (fut.set_result, "woken")).start()
        return await fut, loop.time()

    began = time.monotonic()
    woken, clock = vrun(main())
    elapsed = time.monotonic() - began
    assert woken == "woken"
    # The clock counts the wait the loop really spends (it used to stay at
    # 0.0), and never runs ahead of real time when no timer is pending. How
    # much of the 0.05 s falls inside the loop's wait depends on the machine.
    assert 0 < clock <= elapsed


def test_executor_work_holds_the_clock() -> None:
    async def main():
        loop = asyncio.get_running_loop()
        # A pending timer would let the clock jump past the thread's work.
        sleeper = asyncio.ensure_future(asyncio.sleep(60))
        await asyncio.sleep(0)  # the sleeper sets its deadline, 60.0
        result = await asyncio.wait_for(asyncio.to_thread(time.sleep, 0.05), timeout=30)
        assert loop.time() < 30
        await sleeper
        return result, loop.time()

    assert vrun(main()) == (None, 60.0)


def test_default_executor_shuts_down_without_warnings() -> None:
    async def main():
        await asyncio.to_thread(lambda: None)
        await asyncio.sleep(1)

    vrun(main())  # warnings are errors: a premature join timeout would fail here


def test_a_short_burst_of_work_takes_no_virtual_time() -> None:
    async def main():
        loop = asyncio.get_running_loop()
        await asyncio.sleep(2)
        time.sleep(0.01)  # well within the grace
        return loop.time()

    assert vrun(main()) == 2.0


def test_the_clock_stands_still_while_the_loop_is_not_running() -> None:
    loop = VirtualTimeLoop(grace=0)
    try:
        before = loop.time()
        time.sleep(0.05)
        assert loop.time() == before
    finally:
        loop.close()


def test_without_grace_every_burst_counts() -> None:
    async def main():
        loop = asyncio.get_running_loop()
        await asyncio.sleep(2)
        time.sleep(0.05)
        return loop.time()

    with asyncio.Runner(loop_factory=lambda: VirtualTimeLoop(grace=0)) as runner:
        assert runner.run(main()) >= 2.05


@pytest.mark.parametrize("grace", [-1, float("nan"), "soon"])
def test_grace_must_be_a_non_negative_number(grace) -> None:
    with pytest.raises(ValueError, match="grace"):
        VirtualTimeLoop(grace=grace)


# -- the order of events is real time's ---------------------------------------------------
#
# Each body runs on asyncio's own loop in real time and on a VirtualTimeLoop;
# its events are separated by at least UNIT of real time, enough to order
# them on a loaded machine.

UNIT = 0.05


def real_and_virtual(main):
    """What `main()` returns on asyncio's loop in real time, then in virtual time."""
    return asyncio.run(main()), vrun(main())


def test_a_cancelled_executor_job_holds_the_clock_until_its_thread_finishes(impl) -> None:
    async def main():
        events = []

        def work():
            time.sleep(3 * UNIT)
            events.append("thread finished")

        async def guarded():
            try:
                async with asyncio.timeout(UNIT):
                    await asyncio.to_thread(work)
            except TimeoutError:
                events.append("timeout")

        async def sleeper():
            await impl.sleep(5 * UNIT)
            events.append("sleep done")

        await impl.gather(guarded(), sleeper())
        return events

    real, virtual = real_and_virtual(main)
    assert real == virtual == ["timeout", "thread finished", "sleep done"]


def test_the_clock_runs_at_real_speed_across_executor_work() -> None:
    async def main():
        loop = asyncio.get_running_loop()
        began = loop.time()
        await asyncio.to_thread(time.sleep, 6 * UNIT)
        return loop.time() - began

    real, virtual = real_and_virtual(main)
    assert real >= 6 * UNIT
    assert virtual >= 6 * UNIT


def test_a_sleep0_poll_under_a_timeout_times_out(impl) -> None:
    async def main():
        loop = asyncio.get_running_loop()
        began = loop.time()
        giving_up = time.monotonic() + 10
        try:
            async with asyncio.timeout(4 * UNIT):
                while time.monotonic() < giving_up:
                    await impl.sleep(0)
                return "gave up polling"
        except TimeoutError:
            return "timed out", loop.time() - began >= 4 * UNIT

    real, virtual = real_and_virtual(main)
    assert real == virtual == ("timed out", True)


def test_a_cpu_bound_callback_takes_its_time(impl) -> None:
    async def main():
        events = []

        async def timer():
            await impl.sleep(6 * UNIT)
            events.append("timer")

        async def hog():
            time.sleep(10 * UNIT)  # holds the loop, as CPU-bound work would
            await impl.sleep(UNIT)
            events.append("after the hog")

        await impl.gather(timer(), hog())
        return events

    real, virtual = real_and_virtual(main)
    assert real == virtual == ["timer", "after the hog"]


# Random programs: a few tasks, each a short list of operations -- sleeps,
# executor work, either of them or a sleep(0) poll under asyncio.timeout, and
# cancellations of other tasks. Durations are drawn while simulating the
# program, so that every moment something can happen (a sleep or a thread
# ending, a timeout firing) falls on its own multiple of SLOT: real time
# orders them without ambiguity, unless the machine is so loaded that a
# thread is kept from running for a whole slot (a poll holds a core); a
# program is therefore run again, up to ATTEMPTS times, before a difference
# counts. A wrong virtual clock gives the same wrong order every time.

SLOT = 0.05
ATTEMPTS = 6


@st.composite
def programs(draw):
    n = draw(st.integers(2, 3))
    lengths = [draw(st.integers(1, 3)) for _ in range(n)]
    ops: list[list[tuple]] = [[] for _ in range(n)]
    running = [True] * n
    taken: set[int] = set()
    wakes: list[tuple[int, int]] = []

    def reserve(now):
        slot = now + draw(st.integers(1, 2))
        while slot in taken:
            slot += 1
        taken.add(slot)
        return slot

    def proceed(i, now):
        """Task i goes on at slot `now`: draw its next operations."""
        while running[i] and len(ops[i]) < lengths[i]:
            kinds = ["sleep", "thread", "timeout"] + (["cancel"] if ops[i] else [])
            kind = draw(st.sampled_from(kinds))
            if kind == "cancel":
                j = draw(st.sampled_from([x for x in range(n) if x != i]))
                ops[i].append(("cancel", j))
                running[j] = False
                continue
            if kind == "timeout":
                inner = draw(st.sampled_from(["sleep", "thread", "poll"]))
                limit = reserve(now)
                if inner == "poll":
                    ops[i].append(("timeout", limit - now, ("poll",)))
                    heapq.heappush(wakes, (limit, i))
                else:
                    end = reserve(now)
                    ops[i].append(("timeout", limit - now, (inner, end - now)))
                    heapq.heappush(wakes, (min(limit, end), i))
                return
            end = reserve(now)
            ops[i].append((kind, end - now))
            heapq.heappush(wakes, (end, i))
            return
        running[i] = False

    for i in range(n):
        proceed(i, 0)
    while wakes:
        now, i = heapq.heappop(wakes)
        if running[i]:
            proceed(i, now)
    return ops


async def play(program):
    """Run `program`; return the events it recorded, in order."""
    events: list[str] = []
    giving_up = time.monotonic() + 3
    tasks: list[asyncio.Task] = []

    def work(name, slots):
        time.sleep(slots * SLOT)
        events.append(f"{name} thread done")

    async def step(name, op):
        kind = op[0]
        if kind == "sleep":
            await asyncio.sleep(op[1] * SLOT)
            events.append(f"{name} slept")
        elif kind == "thread":
            await asyncio.to_thread(work, name, op[1])
            events.append(f"{name} joined")
        elif kind == "poll":
            while time.monotonic() < giving_up:
                await asyncio.sleep(0)
            events.append(f"{name} gave up polling")
        elif kind == "timeout":
            try:
                async with asyncio.timeout(op[1] * SLOT):
                    await step(name, op[2])
            except TimeoutError:
                events.append(f"{name} timed out")
        else:
            tasks[op[1]].cancel()
            events.append(f"{name} cancels task {op[1]}")

    async def task(i, steps):
        try:
            for k, op in enumerate(steps):
                await step(f"{i}.{k}", op)
            events.append(f"{i} done")
        except asyncio.CancelledError:
            events.append(f"{i} cancelled")

    tasks.extend(asyncio.ensure_future(task(i, steps)) for i, steps in enumerate(program))
    await asyncio.gather(*tasks)
    return events


@settings(max_examples=15, deadline=None)
@given(programs())
def test_random_programs_keep_the_real_time_order(program) -> None:
    # The lists come back before threads cut short by a timeout or a
    # cancellation have finished; closing the loop waits for them, so their
    # events are in by the time run() returns.
    for _ in range(ATTEMPTS):
        real = asyncio.run(play(program))
        virtual = vrun(play(program))
        if virtual == real:
            break
    assert virtual == real


def test_usable_as_a_runner_loop_factory() -> None:
    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        runner.run(asyncio.sleep(7))
        assert runner.get_loop().time() == 7.0
        runner.run(asyncio.sleep(1))
        assert runner.get_loop().time() == 8.0


def test_start_time_can_be_chosen() -> None:
    loop = VirtualTimeLoop(start=1000.0)
    try:
        loop.run_until_complete(asyncio.sleep(5))
        assert loop.time() == 1005.0
    finally:
        loop.close()


def test_run_takes_virtual_time_or_a_loop_factory_not_both() -> None:
    coro = asyncio.sleep(0)
    with pytest.raises(ValueError):
        rustasync.run(coro, virtual_time=True, loop_factory=asyncio.new_event_loop)
    coro.close()


def test_run_without_virtual_time_is_asyncio_run() -> None:
    async def main():
        return type(asyncio.get_running_loop())

    assert not issubclass(rustasync.run(main()), VirtualTimeLoop)
    assert rustasync.run(main(), loop_factory=VirtualTimeLoop) is VirtualTimeLoop


def test_debug_mode() -> None:
    async def main():
        await asyncio.sleep(2)
        return asyncio.get_running_loop().get_debug()

    assert rustasync.run(main(), virtual_time=True, debug=True) is True


# -- rustasync's primitives on the virtual clock (need the real primitives) --------------------


def test_rustasync_sleep_follows_the_virtual_clock() -> None:
    async def main():
        loop = asyncio.get_running_loop()
        got = await rustasync.gather(rustasync.sleep(3, "a"), rustasync.sleep(1, "b"))
        return got, loop.time()

    assert vrun(main()) == (["a", "b"], 3.0)


def test_rustasync_queue_with_timeout_on_the_virtual_clock() -> None:
    async def main():
        loop = asyncio.get_running_loop()
        q = rustasync.Queue()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(5):
                await q.get()
        return loop.time()

    assert vrun(main()) == 5.0
