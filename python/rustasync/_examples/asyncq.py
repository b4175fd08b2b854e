#!/usr/bin/env python3
# asyncq.py -- the tutorial's producers and consumers, on rustasync's Queue.
#
#   python asyncq.py -p 2 -c 5                    # Queue, sleep and gather from rustasync
#   python asyncq.py -p 2 -c 5 --backend asyncio  # the tutorial's original, to compare
#   python asyncq.py -p 2 -c 5 --engine rust      # the whole simulation as tokio tasks
#   python asyncq.py --broker nats://127.0.0.1:4222 --role consumer -c 5   # in one shell,
#   python asyncq.py --broker nats://127.0.0.1:4222 --role producer -p 2   # in others
#
# --broker moves the queue into NATS JetStream (rustasync.NatsChannel): producer
# and consumer processes, on one machine or several, share the stream "asyncq"
# (--stream). Items travel as JSON [item, time.time()], so the latency spans
# processes; a consumer acknowledges each item with task_done() and a consumer
# process ends after --idle seconds without an item (the queue has no join()
# across processes). --sleep-scale 0.01 makes the sleeps 100x shorter.
#
# --engine rust runs the same producers and consumers in Rust (tokio tasks over
# rustasync's channel engine) and prints the same kinds of lines, sent back to
# Python in batches. Its randomness comes from its own seeded generators
# (--seed, default 444), not from `random` and `os.urandom`, so the item values
# and the interleaving differ from the Python version; --zero-sleep replaces
# every sleep with a bare yield (the machinery alone, as a ceiling benchmark).
#
# asyncio still creates the tasks and runs the loop; `aio` provides the
# primitives being compared.

import asyncio
import itertools as it
import os
import random
import time


async def makeitem(size: int = 5) -> str:
    return os.urandom(size).hex()


async def randsleep(caller=None) -> None:
    i = random.randint(0, 10)
    if caller:
        print(f"{caller} sleeping for {i} seconds.")
    await aio.sleep(i)


async def produce(name: int, q: "aio.Queue") -> None:
    n = random.randint(0, 10)
    for _ in it.repeat(None, n):  # Synchronous loop for each single producer
        await randsleep(caller=f"Producer {name}")
        i = await makeitem()
        t = time.perf_counter()
        await q.put((i, t))
        print(f"Producer {name} added <{i}> to queue.")


async def consume(name: int, q: "aio.Queue") -> None:
    while True:
        await randsleep(caller=f"Consumer {name}")
        i, t = await q.get()
        now = time.perf_counter()
        print(f"Consumer {name} got element <{i}> in {now - t:0.5f} seconds.")
        q.task_done()


async def main(nprod: int, ncon: int):
    q = aio.Queue()
    producers = [asyncio.create_task(produce(n, q)) for n in range(nprod)]
    consumers = [asyncio.create_task(consume(n, q)) for n in range(ncon)]
    await aio.gather(*producers)
    await q.join()  # Implicitly awaits consumers, too
    for c in consumers:
        c.cancel()


async def brokersleep(caller: str, scale: float) -> None:
    i = random.randint(0, 10)
    print(f"{caller} sleeping for {i} seconds.")
    await asyncio.sleep(i * scale)


async def produce_to(name: int, ch, scale: float) -> None:
    n = random.randint(0, 10)
    for _ in it.repeat(None, n):
        await brokersleep(f"Producer {name}", scale)
        i = await makeitem()
        t = time.time()  # one clock for every process on the machine
        await ch.send([i, t])
        print(f"Producer {name} added <{i}> to queue.")


async def consume_from(name: int, ch, scale: float, idle: float) -> None:
    while True:
        await brokersleep(f"Consumer {name}", scale)
        try:
            i, t = await asyncio.wait_for(ch.recv(), idle)
        except TimeoutError:
            return
        now = time.time()
        print(f"Consumer {name} got element <{i}> in {now - t:0.5f} seconds.")
        ch.task_done()


async def broker_main(ns) -> None:
    from rustasync import NatsChannel

    ch = await NatsChannel.connect(ns.broker, ns.stream, codec="json")
    try:
        if ns.role == "producer":
            await asyncio.gather(*(produce_to(n, ch, ns.sleep_scale) for n in range(ns.nprod)))
        else:
            await asyncio.gather(
                *(consume_from(n, ch, ns.sleep_scale, ns.idle) for n in range(ns.ncon))
            )
    finally:
        ch.close()
        await ch.wait_closed()


if __name__ == "__main__":
    import argparse

    random.seed(444)
    parser = argparse.ArgumentParser()
    parser.add_argument("-p", "--nprod", type=int, default=5)
    parser.add_argument("-c", "--ncon", type=int, default=10)
    parser.add_argument("--backend", choices=("asyncio", "rustasync"), default="rustasync")
    parser.add_argument("--engine", choices=("python", "rust"), default="python")
    parser.add_argument("--seed", type=int, default=444, help="seed of the rust engine")
    parser.add_argument("--zero-sleep", action="store_true", help="rust engine: no sleeps")
    parser.add_argument("--broker", metavar="URL", help="NATS server(s) to share the queue through")
    parser.add_argument("--role", choices=("producer", "consumer"), help="with --broker")
    parser.add_argument("--stream", default="asyncq", help="with --broker (default: asyncq)")
    parser.add_argument("--idle", type=float, default=15.0, help="consumer: stop after this idle")
    parser.add_argument("--sleep-scale", type=float, default=1.0, help="with --broker")
    ns = parser.parse_args()
    if ns.broker:
        if ns.role is None:
            parser.error("--broker needs --role producer or --role consumer")
        start = time.perf_counter()
        asyncio.run(broker_main(ns))
        elapsed = time.perf_counter() - start
        print(f"Program completed in {elapsed:0.5f} seconds.")
        raise SystemExit(0)
    if ns.engine == "rust":
        from rustasync import _asyncq_engine

        start = time.perf_counter()
        asyncio.run(_asyncq_engine.run(ns.nprod, ns.ncon, seed=ns.seed, zero_sleep=ns.zero_sleep))
        elapsed = time.perf_counter() - start
        print(f"Program completed in {elapsed:0.5f} seconds.")
        raise SystemExit(0)
    if ns.backend == "asyncio":
        import asyncio as aio
    else:
        import rustasync as aio
    start = time.perf_counter()
    asyncio.run(main(ns.nprod, ns.ncon))
    elapsed = time.perf_counter() - start
    print(f"Program completed in {elapsed:0.5f} seconds.")
