"""NatsChannel when things fail, on real servers: producers and consumers
in separate processes, a consumer SIGKILLed mid-batch, a server restarted,
a node of a three-node cluster killed."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from natsserver import NatsServer

from rustasync import BrokerError, NatsChannel

WORKER = str(Path(__file__).with_name("_broker_worker.py"))


def fresh() -> str:
    return "f" + uuid.uuid4().hex[:12]


def items(first: int, count: int) -> list[bytes]:
    return [b"item-%06d" % n for n in range(first, first + count)]


def worker(*args: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, WORKER, *map(str, args)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


async def take(ch: NatsChannel, want: set[bytes], timeout: float) -> list[bytes]:
    """Receive (and acknowledge) until every item of `want` was seen."""
    got: list[bytes] = []
    deadline = time.monotonic() + timeout
    while not want <= set(got):
        left = deadline - time.monotonic()
        assert left > 0, f"missing {sorted(want - set(got))[:5]}..."
        try:
            batch = await asyncio.wait_for(ch.recv_many(500), left)
        except TimeoutError:
            continue
        got += batch
        ch.task_done(len(batch))
    return got


def test_producers_and_consumers_in_separate_processes(nats_server: NatsServer) -> None:
    stream = fresh()
    NatsChannel.connect_blocking(nats_server.url, stream).close()
    consumers = [worker("consume", nats_server.url, stream, 10_000) for _ in range(2)]
    producers = [worker("produce", nats_server.url, stream, k * 500, 500) for k in range(3)]
    for p in producers:
        out, _ = p.communicate(timeout=60)
        assert p.returncode == 0 and out.strip() == "sent 500"
    got: list[str] = []
    for c in consumers:
        out, _ = c.communicate(timeout=60)
        assert c.returncode == 0
        got += [line.split()[1] for line in out.splitlines() if line.startswith("acked")]
    assert sorted(got) == [i.decode() for i in items(0, 1500)]


def test_killed_consumer_items_are_redelivered(nats_server: NatsServer) -> None:
    """SIGKILL a consumer process holding a batch it has not acknowledged:
    another consumer gets every item it had not acknowledged."""
    stream = fresh()
    ch = NatsChannel.connect_blocking(nats_server.url, stream, ack_wait=2.0)
    ch.send_many_blocking(items(0, 200))
    victim = worker("consume", nats_server.url, stream, 10_000, 0.05)
    acked: set[str] = set()
    assert victim.stdout is not None
    for line in victim.stdout:
        if line.startswith("acked"):
            acked.add(line.split()[1])
        if len(acked) >= 10:
            break
    victim.send_signal(signal.SIGKILL)
    rest, _ = victim.communicate()
    acked |= {line.split()[1] for line in rest.splitlines() if line.startswith("acked")}
    assert victim.returncode == -signal.SIGKILL
    assert 10 <= len(acked) < 200

    async def main() -> list[bytes]:
        other = await NatsChannel.connect(nats_server.url, stream, ack_wait=2.0)
        want = {i for i in items(0, 200) if i.decode() not in acked}
        got = await take(other, want, 30)
        other.close()
        return got

    got = asyncio.run(main())
    assert {i.decode() for i in got} | acked == {i.decode() for i in items(0, 200)}
    ch.close()


@pytest.mark.broker_slow
def test_server_restart_loses_nothing_acknowledged(own_nats_server: NatsServer) -> None:
    """Items acknowledged by the stream survive a restart (file storage);
    the same handles reconnect and go on sending and receiving."""
    server = own_nats_server

    async def main() -> None:
        stream = fresh()
        ch = await NatsChannel.connect(server.url, stream, timeout=2.0)
        await ch.send_many(items(0, 300), msg_ids=[i.decode() for i in items(0, 300)])
        first = await take(ch, set(items(0, 50)), 10)
        server.restart()
        # Sends during the reconnect may time out: retry with the same ids.
        later = items(300, 100)
        deadline = time.monotonic() + 30
        while True:
            try:
                await ch.send_many(later, msg_ids=[i.decode() for i in later])
                break
            except TimeoutError:
                assert time.monotonic() < deadline, "no reconnect within 30 s"
        rest = await take(ch, set(items(0, 400)) - set(first), 30)
        assert set(first) | set(rest) == set(items(0, 400))
        ch.close()

    asyncio.run(main())


@pytest.mark.broker_slow
def test_cluster_survives_a_killed_node(nats_cluster: list[NatsServer]) -> None:
    """A stream replicated on three nodes: kill one while producing and
    consuming; the pipeline goes on and every item arrives."""
    urls = [n.url for n in nats_cluster]

    async def connect(stream: str) -> NatsChannel:
        deadline = time.monotonic() + 30
        while True:  # the cluster elects its JetStream leaders first
            try:
                # Items on their way when the node dies come back after
                # `ack_wait`: keep it well under take()'s 30 s.
                return await NatsChannel.connect(
                    urls, stream, replicas=3, timeout=3.0, ack_wait=5.0
                )
            except (TimeoutError, BrokerError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)

    async def send(ch: NatsChannel, batch: list[bytes]) -> None:
        deadline = time.monotonic() + 30
        while True:
            try:
                await ch.send_many(batch, msg_ids=[i.decode() for i in batch])
                return
            except (TimeoutError, BrokerError):  # no stream leader yet: retry
                assert time.monotonic() < deadline, "the cluster stopped taking items"

    async def main() -> None:
        stream = fresh()
        ch = await connect(stream)
        got: list[bytes] = []
        for k in range(10):
            await send(ch, items(k * 50, 50))
            if k == 3:
                nats_cluster[0].kill()
            got += await take(ch, set(items(k * 50, 50)), 30)
        assert set(got) == set(items(0, 500))
        ch.close()

    asyncio.run(main())


def test_server_down_after_connect_times_out_then_recovers(own_nats_server: NatsServer) -> None:
    """With the server gone, a send raises TimeoutError after `timeout` and
    a bounded receive times out: nothing hangs. Once it is back, the same
    handle works again."""
    server = own_nats_server
    ch = NatsChannel.connect_blocking(server.url, fresh(), timeout=1.0)
    ch.send_blocking(b"before")
    server.kill()
    t0 = time.monotonic()
    with pytest.raises(TimeoutError) as e:
        ch.send_many_blocking([b"during"])
    assert e.value.sent == 0  # type: ignore[attr-defined]
    assert time.monotonic() - t0 < 10
    # The call's own (shorter) timeout carries `sent` too.
    with pytest.raises(TimeoutError) as e:
        ch.send_many_blocking([b"during"], timeout=0.2)
    assert e.value.sent == 0  # type: ignore[attr-defined]

    async def flush() -> None:
        await ch.wait_closed()

    t0 = time.monotonic()
    asyncio.run(flush())  # bounded by the handle's timeout, server or not
    assert time.monotonic() - t0 < 5
    server.start()
    deadline = time.monotonic() + 30
    while True:
        try:
            ch.send_blocking(b"after", msg_id="after")
            break
        except TimeoutError:
            assert time.monotonic() < deadline, "no reconnect within 30 s"
    got = set()
    while not {b"before", b"after"} <= got:
        batch = ch.recv_many_blocking(10, timeout=30)
        got |= set(batch)
        ch.task_done(len(batch))
    ch.close()


# A parent that used only the blocking API forks while a thread keeps
# sending and receiving. The child must connect on its own (not hang on
# the parent's runtime, which has no threads there), and the handle it
# inherited must refuse every use at once instead of deadlocking or
# handing out the parent's items.
FORK_SCRIPT = r"""
import asyncio, gc, os, sys, threading, time
from rustasync import BrokerError, NatsChannel

url, name = sys.argv[1], sys.argv[2]
ch = NatsChannel.connect_blocking(url, name, connect_timeout=2, timeout=3)
ch.send_many_blocking([b"warm-%d" % i for i in range(50)])
stop = threading.Event()

def busy():
    n = 0
    while not stop.is_set():
        ch.send_blocking(b"busy-%d" % n, timeout=5)
        got = ch.recv_many_blocking(10, timeout=5)
        ch.task_done(len(got))
        n += 1

t = threading.Thread(target=busy)
t.start()
time.sleep(0.3)
pid = os.fork()
if pid == 0:
    try:
        t0 = time.monotonic()
        for call in (
            lambda: ch.recv_blocking(timeout=2),
            lambda: ch.send_blocking(b"child", timeout=2),
            lambda: ch.send_many_blocking([b"child"], timeout=2),
            lambda: asyncio.run(asyncio.wait_for(ch.recv(), 2)),
            lambda: asyncio.run(asyncio.wait_for(ch.send(b"child"), 2)),
            lambda: ch.task_done(),
            lambda: ch.stats(),
            lambda: len(ch),
        ):
            try:
                call()
            except BrokerError as e:
                assert "parent process" in str(e), e
            else:
                raise AssertionError("an inherited handle was usable")
        assert ch.close() is False
        del call
        c2 = NatsChannel.connect_blocking(url, name + "c", connect_timeout=2, timeout=3)
        c2.send_blocking(b"child-own", timeout=5)
        assert c2.recv_blocking(timeout=5) == b"child-own"
        c2.task_done()
        c2.close()
        globals().pop("ch")
        gc.collect()
        assert time.monotonic() - t0 < 20
        print("child ok", flush=True)
        os._exit(0)
    except BaseException as e:
        print("child failed:", repr(e), flush=True)
        os._exit(1)
deadline = time.monotonic() + 40
while True:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        break
    if time.monotonic() > deadline:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        sys.exit("child hung")
    time.sleep(0.05)
stop.set()
t.join(10)
assert not t.is_alive()
assert os.waitstatus_to_exitcode(status) == 0, status
ch.send_blocking(b"after", timeout=5)
seen = []
while b"after" not in seen:
    seen += ch.recv_many_blocking(100, timeout=5)
ch.task_done(len(seen))
assert ch.close() is True
print("parent ok", flush=True)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
@pytest.mark.parametrize("run_no", range(3))
def test_forked_child_connects_and_refuses_inherited_handle(
    nats_server: NatsServer, run_no: int
) -> None:
    r = subprocess.run(
        [sys.executable, "-c", FORK_SCRIPT, nats_server.url, fresh()],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "child ok" in r.stdout and "parent ok" in r.stdout, r.stdout + r.stderr
