"""rustasync-bridge against pyo3-async-runtimes (future_into_py, into_future).

The workloads ship inside the package (rustasync/_benchmarks/bench_bridge.py) so that
`python -m rustasync bench --only bridge` works from an installed wheel; this script runs them.
"""

from rustasync._benchmarks.bench_bridge import main

if __name__ == "__main__":
    main()
