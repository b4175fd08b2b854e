"""NatsChannel against a real nats-server with JetStream (nothing mocked):
round trips on the stock loop and uvloop, codecs, acknowledgement modes,
de-duplication, close, blocking variants from threads, clear errors, and
cancellation at every await point losing nothing."""

from __future__ import annotations

import asyncio
import inspect
import random
import threading
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from natsserver import NatsServer

import rustasync
from rustasync import BrokerConnectionError, BrokerError, ChannelClosed, NatsChannel


def fresh() -> str:
    """A stream name of the test's own."""
    return "t" + uuid.uuid4().hex[:12]


async def drain(ch: NatsChannel, idle: float = 1.0) -> list[bytes]:
    """Everything that arrives until `idle` seconds pass with nothing."""
    got: list[bytes] = []
    while True:
        try:
            batch = await asyncio.wait_for(ch.recv_many(1000), idle)
        except TimeoutError:
            return got
        got += batch
        ch.task_done(len(batch))


def test_round_trip(nats_server: NatsServer, run: Callable[..., Any]) -> None:
    async def main() -> None:
        ch = await NatsChannel.connect(nats_server.url, fresh())
        assert isinstance(ch, NatsChannel)
        await ch.send(b"one")
        assert await ch.send_many([b"two", bytearray(b"three")]) == 2
        assert await ch.recv() == b"one"
        ch.task_done()
        got = []
        while len(got) < 2:
            got += await ch.recv_many(10)
        assert got == [b"two", b"three"]
        ch.task_done(2)
        with pytest.raises(ValueError, match="too many times"):
            ch.task_done()
        await ch.send_many([b"%d" % i for i in range(100)])
        seen = []
        async for item in ch:
            seen.append(item)
            ch.task_done()
            if len(seen) == 100:
                ch.close()
        assert seen == [b"%d" % i for i in range(100)]
        assert ch.closed and ch.stats()["unacked"] == 0
        await ch.wait_closed()

    run(main())


def test_methods_are_coroutine_functions() -> None:
    for name in ("send", "send_many", "recv", "recv_many", "wait_closed"):
        assert inspect.iscoroutinefunction(getattr(NatsChannel, name)), name
    assert rustasync.NatsChannel is NatsChannel


@pytest.mark.parametrize(
    "codec, items",
    [("pickle", [{"a": (1, 2)}, None, 3.5, b"x"]), ("json", [{"a": [1, 2]}, None, "é", 7])],
)
def test_codecs(nats_server: NatsServer, codec: str, items: list[Any]) -> None:
    async def main() -> None:
        ch = await NatsChannel.connect(nats_server.url, fresh(), codec=codec, ack="on_receive")
        await ch.send_many(items)
        got: list[Any] = []
        while len(got) < len(items):
            got += await ch.recv_many(10)
        assert got == items
        ch.close()

    asyncio.run(main())


def test_items_are_bytes_without_a_codec(nats_server: NatsServer) -> None:
    async def main() -> None:
        ch = await NatsChannel.connect(nats_server.url, fresh())
        with pytest.raises(TypeError, match="bytes"):
            await ch.send("text")
        with pytest.raises(ValueError, match="codec"):
            await NatsChannel.connect(nats_server.url, fresh(), codec="yaml")  # type: ignore[arg-type]
        ch.close()

    asyncio.run(main())


def test_unacknowledged_items_come_back_after_ack_wait(nats_server: NatsServer) -> None:
    async def main() -> None:
        name = fresh()
        a = await NatsChannel.connect(nats_server.url, name, ack_wait=1.0)
        await a.send_many([b"1", b"2", b"3"])
        first = await a.recv_many(3)
        while len(first) < 3:
            first += await a.recv_many(3)
        a.task_done(1)  # b"1" only
        again = await asyncio.wait_for(a.recv_many(3), 10)
        while len(again) < 2:
            again += await asyncio.wait_for(a.recv_many(3), 10)
        assert sorted(again) == [b"2", b"3"]
        a.task_done(2)
        assert await drain(a, 1.5) == []
        a.close()

    asyncio.run(main())


def test_ack_on_receive_is_not_redelivered(nats_server: NatsServer) -> None:
    async def main() -> None:
        ch = await NatsChannel.connect(nats_server.url, fresh(), ack="on_receive", ack_wait=1.0)
        await ch.send_many([b"a", b"b"])
        got = await ch.recv_many(2)
        while len(got) < 2:
            got += await ch.recv_many(2)
        with pytest.raises(ValueError, match="on_receive"):
            ch.task_done()
        assert await drain(ch, 1.5) == []
        ch.close()

    asyncio.run(main())


def test_duplicates_by_message_id_are_dropped(nats_server: NatsServer) -> None:
    async def main() -> None:
        ch = await NatsChannel.connect(nats_server.url, fresh())
        await ch.send(b"x", msg_id="job-1")
        await ch.send(b"x", msg_id="job-1")
        await ch.send_many([b"y", b"y", b"z"], msg_ids=["job-2", "job-2", "job-3"])
        with pytest.raises(ValueError, match="msg_ids"):
            await ch.send_many([b"y"], msg_ids=[])
        assert sorted(await drain(ch)) == [b"x", b"y", b"z"]
        ch.close()

    asyncio.run(main())


def test_close_hands_buffered_items_to_other_consumers(nats_server: NatsServer) -> None:
    async def main() -> None:
        name = fresh()
        a = await NatsChannel.connect(nats_server.url, name, ack_wait=60.0)
        b = await NatsChannel.connect(nats_server.url, name, ack_wait=60.0)
        await a.send_many([b"%d" % i for i in range(50)])
        first = await a.recv()  # a's puller now holds the rest in its buffer
        a.task_done()
        await asyncio.sleep(0.2)
        assert a.close() and not a.close()
        with pytest.raises(ChannelClosed):
            await a.recv()
        with pytest.raises(ChannelClosed):
            await a.send(b"late")
        assert [x async for x in a] == []
        rest = await drain(b)
        assert sorted([first] + rest, key=int) == [b"%d" % i for i in range(50)]
        b.close()

    asyncio.run(main())


def test_blocking_variants_from_threads(nats_server: NatsServer) -> None:
    name = fresh()
    ch = NatsChannel.connect_blocking(nats_server.url, name)
    out: list[bytes] = []

    def consumer() -> None:
        while len(out) < 30:
            batch = ch.recv_many_blocking(8, timeout=10)
            out.extend(batch)
            ch.task_done(len(batch))

    t = threading.Thread(target=consumer)
    t.start()
    ch.send_blocking(b"first")
    assert ch.send_many_blocking([b"%d" % i for i in range(29)], timeout=10) == 29
    t.join(20)
    assert out[0] == b"first" and len(out) == 30
    with pytest.raises(TimeoutError):
        ch.recv_blocking(timeout=0.2)
    ch.close()
    with pytest.raises(ChannelClosed):
        ch.recv_blocking(timeout=0.2)


def test_server_down_names_the_url() -> None:
    from natsserver import free_port

    url = f"nats://127.0.0.1:{free_port()}"
    with pytest.raises(BrokerConnectionError, match=url.replace(".", r"\.")) as e:
        NatsChannel.connect_blocking(url, "jobs", connect_timeout=2)
    assert isinstance(e.value, ConnectionError)

    async def main() -> None:
        with pytest.raises(BrokerConnectionError, match="127.0.0.1"):
            await NatsChannel.connect([url, url], "jobs", connect_timeout=2)

    asyncio.run(main())


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="URL"):
        NatsChannel.connect_blocking("nats://[bad", "jobs")
    with pytest.raises(ValueError, match="no NATS URL"):
        NatsChannel.connect_blocking([], "jobs")
    with pytest.raises(ValueError, match="stream name"):
        NatsChannel.connect_blocking("nats://127.0.0.1:1", "a.b")
    with pytest.raises(ValueError, match="ack"):
        NatsChannel.connect_blocking("nats://127.0.0.1:1", "s", ack="later")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ack_wait"):
        NatsChannel.connect_blocking("nats://127.0.0.1:1", "s", ack_wait=-1)
    with pytest.raises(ValueError, match="ack_wait"):
        NatsChannel.connect_blocking("nats://127.0.0.1:1", "s", ack_wait=0)
    for bad in (0, -2, -(2**40)):
        with pytest.raises(ValueError, match="max_deliver"):
            NatsChannel.connect_blocking("nats://127.0.0.1:1", "s", max_deliver=bad)
    # Beyond what the semaphores behind it can count: refused, no panic.
    for bad in (2**31, 2**61, 2**64 - 1):
        with pytest.raises(ValueError, match="max_inflight"):
            NatsChannel.connect_blocking("nats://127.0.0.1:1", "s", max_inflight=bad)


def test_connect_blocking_is_bounded() -> None:
    # A listener that accepts and never speaks: the connect gives up.
    import socket
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        url = f"nats://127.0.0.1:{s.getsockname()[1]}"
        t0 = time.monotonic()
        with pytest.raises((TimeoutError, BrokerConnectionError)):
            NatsChannel.connect_blocking(url, "s", connect_timeout=1, timeout=1)
        assert time.monotonic() - t0 < 10


def test_message_ids_with_line_breaks_are_refused(nats_server: NatsServer) -> None:
    async def main() -> None:
        ch = await NatsChannel.connect(nats_server.url, fresh())
        for bad in ("a\r\nb", "a\n", "\r"):
            with pytest.raises(ValueError, match="msg_id"):
                await ch.send(b"x", msg_id=bad)
            with pytest.raises(ValueError, match="msg_id"):
                ch.send_blocking(b"x", msg_id=bad)
            # Refused before anything of the batch is sent.
            with pytest.raises(ValueError, match="msg_ids"):
                await ch.send_many([b"a", b"b"], msg_ids=["ok", bad])
            with pytest.raises(ValueError, match="msg_ids"):
                ch.send_many_blocking([b"a", b"b"], msg_ids=["ok", bad])
        with pytest.raises(TypeError, match="msg_ids"):
            await ch.send_many([b"a"], msg_ids=[1])  # type: ignore[list-item]
        with pytest.raises(TypeError, match="msg_ids"):
            await ch.send_many([b"a"], msg_ids="a")
        with pytest.raises(TypeError, match="msg_id must be a str"):
            await ch.send(b"a", msg_id=1)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="msg_id must be a str"):
            ch.send_blocking(b"a", msg_id=b"1")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="timeout"):
            ch.send_blocking(b"a", timeout="1")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="timeout"):
            ch.send_blocking(b"a", timeout=float("nan"))
        assert await drain(ch) == []
        ch.send_blocking(b"huge timeout", timeout=1e300)
        assert await drain(ch) == [b"huge timeout"]
        await ch.send_many([b"a", b"b"], msg_ids=["id: 1", "id 2"])
        assert await drain(ch) == [b"a", b"b"]
        assert ch.stats()["unacked"] == 0
        ch.close()

    asyncio.run(main())


def test_missing_stream_and_oversized_message(nats_server: NatsServer) -> None:
    async def main() -> None:
        name = fresh()
        with pytest.raises(BrokerError, match=f"stream '{name}'|stream \"{name}\""):
            await NatsChannel.connect(nats_server.url, name, create=False)
        ch = await NatsChannel.connect(nats_server.url, name)
        with pytest.raises(ValueError, match="too large"):
            await ch.send(b"x" * (2 << 20))
        with pytest.raises(ValueError, match="too large") as e:
            await ch.send_many([b"ok", b"x" * (2 << 20)])
        assert e.value.sent == 1  # type: ignore[attr-defined]
        assert await drain(ch) == [b"ok"]
        ch.close()

    asyncio.run(main())


def test_cancelled_receives_lose_nothing(nats_server: NatsServer, run: Callable[..., Any]) -> None:
    """Receives cancelled at random points (before an item is there, while
    one is on its way, just after it arrived): every item is received by
    some completed receive, none is lost."""

    async def main() -> None:
        rng = random.Random(7)
        ch = await NatsChannel.connect(nats_server.url, fresh(), prefetch=8)
        n = 300
        sender = asyncio.create_task(ch.send_many([b"%d" % i for i in range(n)]))
        got: list[bytes] = []
        cancelled = 0
        while len(set(got)) < n:
            op = ch.recv() if rng.random() < 0.5 else ch.recv_many(rng.randint(1, 5))
            task = asyncio.ensure_future(op)
            for _ in range(rng.randint(0, 3)):
                await asyncio.sleep(0)
            if rng.random() < 0.5:
                await asyncio.sleep(rng.random() / 1000)
            task.cancel()
            try:
                r = await asyncio.wait_for(task, 10)
            except asyncio.CancelledError:
                cancelled += 1
                continue
            batch = r if isinstance(r, list) else [r]
            got += batch
            ch.task_done(len(batch))
        await sender
        assert cancelled > 5
        assert sorted(set(got), key=int) == [b"%d" % i for i in range(n)]
        assert await drain(ch, 0.5) == []
        ch.close()

    run(main())


def test_cancelled_sends_are_safe_to_retry(nats_server: NatsServer) -> None:
    """Sends cancelled at random points may or may not have been stored;
    sending everything again with the same message ids stores each item
    exactly once."""

    async def main() -> None:
        rng = random.Random(11)
        ch = await NatsChannel.connect(nats_server.url, fresh())
        items = [b"%d" % i for i in range(200)]
        ids = [i.decode() for i in items]
        for start in range(0, 200, 10):
            task = asyncio.ensure_future(
                ch.send_many(items[start : start + 10], msg_ids=ids[start : start + 10])
            )
            for _ in range(rng.randint(0, 4)):
                await asyncio.sleep(0)
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        await ch.send_many(items, msg_ids=ids)
        assert sorted(await drain(ch), key=int) == items
        ch.close()

    asyncio.run(main())


def test_many_concurrent_sends(nats_server: NatsServer, run: Callable[..., Any]) -> None:
    """Hundreds of tasks sending at once: their acks come back in bursts
    through the bridge, and every item is stored once."""

    async def main() -> None:
        ch = await NatsChannel.connect(nats_server.url, fresh())
        await asyncio.gather(*(ch.send(b"%d" % i) for i in range(500)))
        assert sorted(await drain(ch), key=int) == [b"%d" % i for i in range(500)]
        ch.close()

    run(main())
