"""NatsChannel vs nats-py on one nats-server.

The workloads ship inside the package (rustasync/_benchmarks/bench_nats.py) so that
`python -m rustasync bench --only nats` works from an installed wheel; this script runs them.
"""

from rustasync._benchmarks.bench_nats import main

if __name__ == "__main__":
    main()
