#!/usr/bin/env python3
# countasync.py -- the tutorial's "Hello World of async IO", on rustasync.
#
#   python countasync.py                    # sleep and gather from rustasync
#   python countasync.py --backend asyncio  # the tutorial's original, to compare

import asyncio


async def count():
    print("One")
    await aio.sleep(1)
    print("Two")


async def main():
    await aio.gather(count(), count(), count())


if __name__ == "__main__":
    import argparse
    import time

    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=("asyncio", "rustasync"), default="rustasync")
    if parser.parse_args().backend == "asyncio":
        import asyncio as aio
    else:
        import rustasync as aio
    s = time.perf_counter()
    asyncio.run(main())
    elapsed = time.perf_counter() - s
    print(f"{__file__} executed in {elapsed:0.2f} seconds.")
