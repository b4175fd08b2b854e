"""sleep and gather: rustasync vs stock asyncio.

The workloads ship inside the package (rustasync/_benchmarks/bench_core.py) so that
`python -m rustasync bench` works from an installed wheel; this script runs them.
"""

from rustasync._benchmarks.bench_core import main

if __name__ == "__main__":
    main()
