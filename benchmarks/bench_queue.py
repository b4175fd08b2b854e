"""Queue benchmarks: rustasync's queues against asyncio's and peers'.

The workloads ship inside the package (rustasync/_benchmarks/bench_queue.py) so that
`python -m rustasync bench` works from an installed wheel; this script runs them.
"""

from rustasync._benchmarks.bench_queue import main

if __name__ == "__main__":
    main()
