"""NatsChannel's life cycle against a real nats-server: what close(),
dropping a handle and cancelling hand back to the server, how long items
wait in the local buffer, settings of an existing consumer, undecodable
items, and names checked before anything goes on the wire.

The waits here are bounds far above what the behaviour under test needs
(and far below `ack_wait`), never measurements."""

from __future__ import annotations

import asyncio
import gc
import time
import uuid

import nats
import pytest
from natsserver import NatsServer, free_port

from rustasync import BrokerError, ChannelClosed, NatsChannel


def fresh() -> str:
    return "l" + uuid.uuid4().hex[:12]


async def take(ch: NatsChannel, n: int, within: float) -> list[bytes]:
    """Receive and acknowledge until `n` items came, for at most `within` s."""
    got: list[bytes] = []
    deadline = time.monotonic() + within
    while len(got) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            batch = await asyncio.wait_for(ch.recv_many(1000), left)
        except TimeoutError:
            break
        got += batch
        ch.task_done(len(batch))
    return got


async def quiet(ch: NatsChannel, idle: float) -> list[bytes]:
    """What arrives (acknowledged) until `idle` seconds pass with nothing."""
    got: list[bytes] = []
    while True:
        try:
            batch = await asyncio.wait_for(ch.recv_many(1000), idle)
        except TimeoutError:
            return got
        got += batch
        ch.task_done(len(batch))


def numbered(n: int) -> list[bytes]:
    return [b"%d" % i for i in range(n)]


def test_close_hands_back_everything_pulled(nats_server: NatsServer) -> None:
    """Every item a closing handle pulled from the server and did not hand
    to the application goes to another consumer at once, not after
    `ack_wait` (30 s here; the test gives up after 10)."""

    async def main() -> None:
        name = fresh()
        a = await NatsChannel.connect(nats_server.url, name, ack_wait=30.0, prefetch=256)
        items = numbered(2000)
        await a.send_many(items)
        first = await a.recv()
        a.task_done()
        # Give the puller time to pull far more than one batch's worth.
        await asyncio.sleep(0.5)
        a.close()
        await a.wait_closed()
        b = await NatsChannel.connect(nats_server.url, name, ack_wait=30.0)
        rest = await take(b, len(items) - 1, within=10.0)
        assert len(rest) == len(items) - 1, f"{len(items) - 1 - len(rest)} items held back"
        assert sorted([first, *rest], key=int) == items
        b.close()

    asyncio.run(main())


def test_buffered_items_do_not_use_up_ack_wait(nats_server: NatsServer) -> None:
    """Items waiting in the local buffer of a handle that is receiving are
    not redelivered elsewhere while they wait, however long the buffer
    takes to drain compared with `ack_wait`."""

    async def main() -> None:
        name = fresh()
        a = await NatsChannel.connect(nats_server.url, name, ack_wait=1.0, prefetch=40)
        items = numbered(40)
        await a.send_many(items)
        got = [await a.recv()]
        a.task_done()
        while len(a) < 39:
            await asyncio.sleep(0.02)
        b = await NatsChannel.connect(nats_server.url, name, ack_wait=1.0)
        stolen = asyncio.ensure_future(quiet(b, 6.0))
        # 39 items at 0.1 s each: 4 times ack_wait.
        for _ in range(39):
            got.append(await asyncio.wait_for(a.recv(), 10))
            await asyncio.sleep(0.1)
            a.task_done()
        assert sorted(got, key=int) == items
        assert await stolen == []
        a.close()
        b.close()

    asyncio.run(main())


def test_settings_of_an_existing_consumer_are_checked(nats_server: NatsServer) -> None:
    """A setting given explicitly that differs from the existing durable
    consumer's is an error naming it; one left out takes the consumer's."""

    async def main() -> None:
        name = fresh()
        a = await NatsChannel.connect(nats_server.url, name, ack_wait=20.0, max_deliver=5)
        await a.send(b"x")
        assert await a.recv() == b"x"
        a.close()
        with pytest.raises(BrokerError, match="ack_wait") as e:
            await NatsChannel.connect(nats_server.url, name, ack_wait=5.0)
        assert "20" in str(e.value)
        with pytest.raises(BrokerError, match="max_deliver"):
            NatsChannel.connect_blocking(nats_server.url, name, max_deliver=3)
        with pytest.raises(BrokerError, match="max_deliver"):
            await NatsChannel.connect(nats_server.url, name, max_deliver=-1)
        b = await NatsChannel.connect(nats_server.url, name, ack_wait=20.0, max_deliver=5)
        c = await NatsChannel.connect(nats_server.url, name)
        assert c.stats()["ack_wait"] == 20.0
        assert c.stats()["max_deliver"] == 5
        b.close()
        c.close()

    asyncio.run(main())


def test_a_sending_handle_creates_no_consumer(nats_server: NatsServer) -> None:
    """A handle that only sends leaves the consumer alone: on a work-queue
    stream, the receiving side can then pick its own consumer name."""

    async def main() -> None:
        name = fresh()
        producer = await NatsChannel.connect(nats_server.url, name)
        await producer.send_many(numbered(10))
        nc = await nats.connect(nats_server.url)
        try:
            js = nc.jetstream()
            assert [c async for c in _consumers(js, name)] == []
        finally:
            await nc.close()
        workers = await NatsChannel.connect(nats_server.url, name, consumer="workers")
        assert sorted(await take(workers, 10, within=10.0), key=int) == numbered(10)
        producer.close()
        workers.close()

    asyncio.run(main())


async def _consumers(js: object, stream: str):  # type: ignore[no-untyped-def]
    for info in await js.consumers_info(stream):  # type: ignore[attr-defined]
        yield info.name


def test_cancelled_send_many_tells_how_many_were_stored(nats_server: NatsServer) -> None:
    async def main() -> None:
        ch = await NatsChannel.connect(nats_server.url, fresh(), max_inflight=1)
        items = numbered(2000)
        op = ch.send_many(items)
        task = asyncio.ensure_future(op)
        while op.sent == 0:  # type: ignore[attr-defined]
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        stored = await quiet(ch, 1.0)
        # Read once the send has surely stopped: it may go on for a moment
        # after the cancellation.
        sent = op.sent  # type: ignore[attr-defined]
        assert 0 < sent < len(items)
        # A prefix of `sent` items is stored; the next one may be too.
        assert stored[:sent] == items[:sent]
        assert len(stored) - sent in (0, 1)
        done = ch.send_many(items[:3])
        assert await done == 3
        assert done.sent == 3  # type: ignore[attr-defined]
        ch.close()

    asyncio.run(main())


def test_wait_closed_is_bounded_with_many_pending_acks(own_nats_server: NatsServer) -> None:
    """More acks than the client queues while the server is gone:
    wait_closed() still returns (what was not written comes back later)."""

    async def main() -> None:
        ch = await NatsChannel.connect(own_nats_server.url, fresh(), timeout=1.0, prefetch=1000)
        n = 6000
        await ch.send_many(numbered(n))
        got: list[bytes] = []
        while len(got) < n:
            got += await asyncio.wait_for(ch.recv_many(n), 10)
        own_nats_server.kill()
        ch.task_done(n)
        await asyncio.wait_for(ch.wait_closed(), 30)
        ch.close()

    asyncio.run(main())


def test_dropped_handle_finishes_pending_operations(nats_server: NatsServer) -> None:
    """A handle nobody refers to any more stays open while operations
    started on it are pending: they finish as if it were kept."""

    async def main() -> None:
        name = fresh()
        sent = await (await NatsChannel.connect(nats_server.url, name)).send_many(numbered(50))
        assert sent == 50
        recv = asyncio.ensure_future((await NatsChannel.connect(nats_server.url, name)).recv())
        gc.collect()
        assert await asyncio.wait_for(recv, 10) == b"0"

    asyncio.run(main())


def test_dropped_handle_hands_back_unacknowledged_items(nats_server: NatsServer) -> None:
    """Items received through a handle that is dropped without task_done()
    can never be acknowledged through it: they go to other consumers at
    once, not after `ack_wait`."""

    async def main() -> None:
        name = fresh()
        a = await NatsChannel.connect(nats_server.url, name, ack_wait=30.0)
        await a.send_many(numbered(5))
        got = await a.recv_many(5)
        assert got
        del a
        gc.collect()
        b = await NatsChannel.connect(nats_server.url, name, ack_wait=30.0)
        assert sorted(await take(b, 5, within=10.0), key=int) == numbered(5)
        b.close()

    asyncio.run(main())


def test_undecodable_item_is_reported_once(nats_server: NatsServer) -> None:
    async def main() -> None:
        name = fresh()
        raw = await NatsChannel.connect(nats_server.url, name, ack_wait=1.0)
        await raw.send_many([b"not a pickle", b"\x80\x05K\x07."])  # the second is pickle of 7
        raw.close()
        ch = await NatsChannel.connect(nats_server.url, name, codec="pickle")
        with pytest.raises(ValueError, match="decode"):
            await ch.recv()
        assert await ch.recv() == 7
        ch.task_done()
        # Not delivered again after ack_wait (1 s): it was terminated.
        assert await quiet(ch, 3.0) == []
        assert ch.stats()["unacked"] == 0
        ch.close()

    asyncio.run(main())


def test_invalid_names_are_refused_before_connecting() -> None:
    url = f"nats://127.0.0.1:{free_port()}"  # nothing listens: I/O would fail differently
    cases = [
        ({"stream": "a b"}, "stream"),
        ({"stream": "a/b"}, "stream"),
        ({"stream": ""}, "stream"),
        ({"subject": ""}, "subject"),
        ({"subject": "a b"}, "subject"),
        ({"subject": "a.*"}, "subject"),
        ({"subject": "a.>"}, "subject"),
        ({"subject": "a..b"}, "subject"),
        ({"subject": ".a"}, "subject"),
        ({"subject": "a\tb"}, "subject"),
        ({"consumer": ""}, "consumer"),
        ({"consumer": "a.b"}, "consumer"),
        ({"consumer": "a b"}, "consumer"),
        ({"consumer": "a*"}, "consumer"),
        ({"consumer": "a>"}, "consumer"),
    ]
    for kwargs, arg in cases:
        kw = dict(kwargs)
        stream = kw.pop("stream", "ok")
        with pytest.raises(ValueError, match=arg):
            NatsChannel.connect_blocking(url, stream, connect_timeout=1, **kw)  # type: ignore[arg-type]

    async def main() -> None:
        for kwargs, arg in cases:
            kw = dict(kwargs)
            stream = kw.pop("stream", "ok")
            with pytest.raises(ValueError, match=arg):
                NatsChannel.connect(url, stream, connect_timeout=1, **kw)  # type: ignore[arg-type]

    asyncio.run(main())


def test_task_done_counts(nats_server: NatsServer) -> None:
    async def main() -> None:
        ch = await NatsChannel.connect(nats_server.url, fresh())
        await ch.send_many([b"a", b"b"])
        got = await ch.recv_many(2)
        while len(got) < 2:
            got += await ch.recv_many(2)
        for bad in (-1, 0, -(2**70)):
            with pytest.raises(ValueError, match="count"):
                ch.task_done(bad)
        with pytest.raises(TypeError, match="count"):
            ch.task_done("1")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="too many times"):
            ch.task_done(2**70)
        ch.task_done(2)
        with pytest.raises(ValueError, match="too many times"):
            ch.task_done()
        ch.close()
        with pytest.raises(ChannelClosed):
            await ch.recv()

    asyncio.run(main())


def test_slow_consumer_loses_nothing_with_max_deliver(nats_server: NatsServer) -> None:
    """Items processed one at a time, each within `ack_wait` but with long
    gaps between receives: the handle is working while it holds an
    unacknowledged item, so its buffered items are not handed back (which
    would spend their few deliveries) and every item is processed."""

    async def main() -> None:
        name = fresh()
        ack_wait = 1.0
        ch = await NatsChannel.connect(
            nats_server.url, name, ack_wait=ack_wait, max_deliver=2, prefetch=16
        )
        items = numbered(5)
        await ch.send_many(items)
        seen: list[bytes] = []
        while True:
            try:
                item = await asyncio.wait_for(ch.recv(), 3 * ack_wait)
            except TimeoutError:
                break
            seen.append(item)
            await asyncio.sleep(0.8 * ack_wait)
            ch.task_done()
        assert sorted(seen, key=int) == items
        ch.close()

    asyncio.run(main())


def test_settings_come_from_a_consumer_another_handle_created(nats_server: NatsServer) -> None:
    """A handle connected before the consumer existed takes `ack_wait` and
    `max_deliver` from the consumer another handle created; one whose
    explicit setting differs from it fails its receives with BrokerError."""

    async def main() -> None:
        name = fresh()
        early = await NatsChannel.connect(nats_server.url, name)
        strict = await NatsChannel.connect(nats_server.url, name, ack_wait=7.0)
        creator = await NatsChannel.connect(nats_server.url, name, ack_wait=1.0, max_deliver=4)
        await creator.send_many(numbered(3))
        assert await creator.recv() == b"0"
        creator.task_done()
        creator.close()
        # Both were naked together: either may come back first.
        assert await asyncio.wait_for(early.recv(), 10) in (b"1", b"2")
        early.task_done()
        assert early.stats()["ack_wait"] == 1.0
        assert early.stats()["max_deliver"] == 4
        with pytest.raises(BrokerError, match="ack_wait"):
            await asyncio.wait_for(strict.recv(), 10)
        early.close()
        strict.close()

    asyncio.run(main())


def test_closing_mid_delivery_hands_back_everything(nats_server: NatsServer) -> None:
    """close() while the server is delivering as fast as it can: every item
    on its way to the handle goes to another consumer at once, not after
    `ack_wait` (30 s here; the test gives up after 10). Five times."""

    async def once(delay: float, size: int) -> None:
        name = fresh()
        prod = await NatsChannel.connect(nats_server.url, name, ack_wait=30.0)
        a = await NatsChannel.connect(nats_server.url, name, ack_wait=30.0, prefetch=1024)
        items = numbered(10000)
        await prod.send_many(items)
        got: list[bytes] = []

        async def consume() -> None:
            while True:
                try:
                    batch = await a.recv_many(size)
                except ChannelClosed:
                    return
                got.extend(batch)
                a.task_done(len(batch))

        task = asyncio.ensure_future(consume())
        await asyncio.sleep(delay)
        a.close()
        await task
        await asyncio.wait_for(a.wait_closed(), 20)
        b = await NatsChannel.connect(nats_server.url, name, ack_wait=30.0, prefetch=1024)
        got += await take(b, len(items) - len(got), within=10.0)
        assert len(got) == len(items), f"{len(items) - len(got)} items held back"
        assert sorted(got, key=int) == items
        b.close()
        prod.close()

    async def main() -> None:
        for delay, size in [(0.01, 1), (0.05, 64), (0.1, 10), (0.2, 1), (0.3, 64)]:
            await once(delay, size)

    asyncio.run(main())


def test_cancelled_send_many_is_bounded_by_published(nats_server: NatsServer) -> None:
    """After a cancelled send_many, `sent` items (a prefix) are stored, and
    none beyond the first `published`."""

    async def main() -> None:
        name = fresh()
        ch = await NatsChannel.connect(nats_server.url, name, max_inflight=64)
        items = numbered(5000)
        op = ch.send_many(items)
        task = asyncio.ensure_future(op)
        while op.sent == 0:  # type: ignore[attr-defined]
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        stored = await quiet(ch, 1.0)
        # Read once the send has surely stopped.
        sent, published = op.sent, op.published  # type: ignore[attr-defined]
        assert 0 < sent <= published < len(items)
        assert stored[:sent] == items[:sent]
        assert sent <= len(stored) <= published
        assert set(stored) <= set(items[:published])
        done = ch.send_many(items[:3])
        assert await done == 3
        assert done.sent == done.published == 3  # type: ignore[attr-defined]
        ch.close()

    asyncio.run(main())


def test_consumer_filtering_other_subjects_is_refused(nats_server: NatsServer) -> None:
    """An existing consumer that takes other subjects than `subject` (with
    `filter_subjects`, or no filter on a stream of several subjects)."""

    async def main() -> None:
        from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StreamConfig

        nc = await nats.connect(nats_server.url)
        js = nc.jetstream()

        async def stream(filters: list[str] | None) -> str:
            """A stream of subjects NAME and NAMEx, its consumer NAME taking
            `filters` (x: NAMEx, "": NAME); None: no filter."""
            name = fresh()
            await js.add_stream(
                StreamConfig(
                    name=name, subjects=[name, name + "x"], retention=RetentionPolicy.WORK_QUEUE
                )
            )
            config = ConsumerConfig(durable_name=name, ack_policy=AckPolicy.EXPLICIT)
            if filters is not None:
                config.filter_subjects = [name + f for f in filters]
            await js.add_consumer(name, config)
            return name

        try:
            for filters in (["x"], None):
                name = await stream(filters)
                with pytest.raises(BrokerError, match="subject"):
                    await NatsChannel.connect(nats_server.url, name)
            # One filter on our own subject, given as a list, is ours.
            name = await stream([""])
            ch = await NatsChannel.connect(nats_server.url, name)
            await js.publish(name + "x", b"other")
            await ch.send(b"mine")
            assert await asyncio.wait_for(ch.recv(), 10) == b"mine"
            ch.task_done()
            ch.close()
        finally:
            await nc.close()

    asyncio.run(main())


def test_task_done_refuses_bool(nats_server: NatsServer) -> None:
    async def main() -> None:
        ch = await NatsChannel.connect(nats_server.url, fresh())
        await ch.send(b"a")
        await ch.recv()
        with pytest.raises(TypeError, match="count"):
            ch.task_done(True)
        assert ch.stats()["unacked"] == 1
        ch.task_done(1)
        ch.close()

    asyncio.run(main())


def test_overlong_names_are_refused_before_connecting() -> None:
    url = f"nats://127.0.0.1:{free_port()}"  # nothing listens: I/O would fail differently
    with pytest.raises(ValueError, match="stream"):
        NatsChannel.connect_blocking(url, "s" * 256, connect_timeout=1)
    with pytest.raises(ValueError, match="consumer"):
        NatsChannel.connect_blocking(url, "s", consumer="c" * 256, connect_timeout=1)
    # Counted in bytes, as the server does.
    with pytest.raises(ValueError, match="stream"):
        NatsChannel.connect_blocking(url, "ü" * 128, connect_timeout=1)


def test_wait_closed_does_not_wait_for_pull_requests(nats_server: NatsServer) -> None:
    """After everything was consumed, close() + wait_closed() returns once
    the buffer is handed back and the naks are written, without waiting
    for the handle's last pull requests (2 s) to expire on the empty
    stream; items the server hands to those requests meanwhile are naked
    in the background and reach another consumer at once (well under
    `ack_wait`, 30 s here)."""

    async def main() -> None:
        name = fresh()
        a = await NatsChannel.connect(nats_server.url, name, ack_wait=30.0, prefetch=64)
        items = numbered(200)
        await a.send_many(items)
        got = await take(a, len(items), within=10.0)
        assert sorted(got, key=int) == items
        # The stream is empty and a pull request of `a` was just sent.
        a.close()
        t0 = time.monotonic()
        await a.wait_closed()
        took = time.monotonic() - t0
        b = await NatsChannel.connect(nats_server.url, name, ack_wait=30.0)
        later = numbered(300)[200:]
        # Sent while the last pull requests of `a` may still be waiting.
        await b.send_many(later)
        rest = await take(b, len(later), within=10.0)
        assert sorted(rest, key=int) == later
        assert took < 1.0, f"wait_closed() took {took:.2f} s: it waited for the pull requests"
        b.close()
        await b.wait_closed()

    asyncio.run(main())


@pytest.mark.parametrize("max_deliver", [None, 5])
def test_stuck_handle_hands_back_its_buffer(
    nats_server: NatsServer, max_deliver: int | None
) -> None:
    """A handle whose application received one item and then never
    acknowledged it nor received again (a forgotten task_done(), a hung
    worker) does not keep its prefetched items alive forever: once its
    oldest unacknowledged item is older than `ack_wait`, it no longer
    counts as working, and its buffer goes to another consumer (with a
    `max_deliver` limit, after a few times `ack_wait`)."""

    async def main() -> None:
        name = fresh()
        kw: dict[str, object] = {"ack_wait": 1.0, "prefetch": 10}
        if max_deliver is not None:
            kw["max_deliver"] = max_deliver
        a = await NatsChannel.connect(nats_server.url, name, **kw)  # type: ignore[arg-type]
        items = numbered(30)
        await a.send_many(items)
        await a.recv()  # never acknowledged, and no more receives
        while len(a) < 9:
            await asyncio.sleep(0.02)
        b = await NatsChannel.connect(nats_server.url, name, **kw)  # type: ignore[arg-type]
        got = await take(b, len(items), within=15.0)
        assert sorted(set(got), key=int) == items, f"{len(items) - len(set(got))} items held back"
        a.close()
        b.close()
        await a.wait_closed()

    asyncio.run(main())


def test_consumer_takes_many_waiting_pull_requests(nats_server: NatsServer) -> None:
    """The consumer a receiving handle creates takes far more than the
    server's default 512 waiting pull requests: each receiving handle keeps
    one or two waiting, and more handles than that would starve."""

    async def main() -> None:
        name = fresh()
        ch = await NatsChannel.connect(nats_server.url, name)
        await ch.send(b"x")
        assert await ch.recv() == b"x"
        ch.task_done()
        nc = await nats.connect(nats_server.url)
        try:
            info = await nc.jetstream().consumer_info(name, name)
            assert (info.config.max_waiting or 0) >= 4096, info.config.max_waiting
        finally:
            await nc.close()
        ch.close()
        await ch.wait_closed()

    asyncio.run(main())
