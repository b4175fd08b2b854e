#!/usr/bin/env python3
# countsync.py -- the tutorial's synchronous contrast to countasync.py.
#
# Nothing here is asynchronous: time.sleep() blocks, so the three counts run
# one after the other. --backend is accepted only so that every example takes
# the same flag; it changes nothing.

import time


def count():
    print("One")
    time.sleep(1)
    print("Two")


def main():
    for _ in range(3):
        count()


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=("asyncio", "rustasync"), default="rustasync")
    parser.parse_args()
    s = time.perf_counter()
    main()
    elapsed = time.perf_counter() - s
    print(f"{__file__} executed in {elapsed:0.2f} seconds.")
