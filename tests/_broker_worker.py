"""A producer or consumer process for the NatsChannel tests.

python _broker_worker.py produce URLS STREAM FIRST COUNT
    publishes b"item-<n>" for n in FIRST..FIRST+COUNT (with message ids),
    then prints "sent COUNT".
python _broker_worker.py consume URLS STREAM LIMIT [DELAY]
    receives until LIMIT items were acknowledged or 3 s pass with nothing,
    sleeping DELAY s per item; prints "got <item>" as each is received
    and "acked <item>" once task_done() was called and flushed.
"""

from __future__ import annotations

import asyncio
import sys

from rustasync import NatsChannel


async def produce(urls: str, stream: str, first: int, count: int) -> None:
    ch = await NatsChannel.connect(urls.split(","), stream)
    items = [b"item-%06d" % n for n in range(first, first + count)]
    ids = [i.decode() for i in items]
    for start in range(0, count, 100):
        await ch.send_many(items[start : start + 100], msg_ids=ids[start : start + 100])
    print(f"sent {count}", flush=True)
    ch.close()


async def consume(urls: str, stream: str, limit: int, delay: float) -> None:
    ch = await NatsChannel.connect(urls.split(","), stream, ack_wait=2.0, prefetch=16)
    acked = 0
    while acked < limit:
        try:
            item = await asyncio.wait_for(ch.recv(), 3.0)
        except TimeoutError:
            break
        print(f"got {item.decode()}", flush=True)
        if delay:
            await asyncio.sleep(delay)
        ch.task_done()
        await ch.wait_closed()
        print(f"acked {item.decode()}", flush=True)
        acked += 1
    ch.close()
    await ch.wait_closed()


if __name__ == "__main__":
    role, urls, stream = sys.argv[1:4]
    if role == "produce":
        asyncio.run(produce(urls, stream, int(sys.argv[4]), int(sys.argv[5])))
    else:
        delay = float(sys.argv[5]) if len(sys.argv) > 5 else 0.0
        asyncio.run(consume(urls, stream, int(sys.argv[4]), delay))
