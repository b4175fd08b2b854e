"""Channel, Rust-engine and bridge benchmarks.

The workloads ship inside the package (rustasync/_benchmarks/bench_channel.py) so that
`python -m rustasync bench` works from an installed wheel; this script runs them.
"""

from rustasync._benchmarks.bench_channel import main

if __name__ == "__main__":
    main()
