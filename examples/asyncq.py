#!/usr/bin/env python3
# asyncq.py -- the tutorial's producers and consumers, on rustasync's Queue.
#
#   python asyncq.py -p 2 -c 5                    # Queue, sleep and gather from rustasync
#   python asyncq.py -p 2 -c 5 --backend asyncio  # the tutorial's original, to compare
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


if __name__ == "__main__":
    import argparse

    random.seed(444)
    parser = argparse.ArgumentParser()
    parser.add_argument("-p", "--nprod", type=int, default=5)
    parser.add_argument("-c", "--ncon", type=int, default=10)
    parser.add_argument("--backend", choices=("asyncio", "rustasync"), default="rustasync")
    ns = parser.parse_args()
    if ns.backend == "asyncio":
        import asyncio as aio
    else:
        import rustasync as aio
    start = time.perf_counter()
    asyncio.run(main(ns.nprod, ns.ncon))
    elapsed = time.perf_counter() - start
    print(f"Program completed in {elapsed:0.5f} seconds.")
