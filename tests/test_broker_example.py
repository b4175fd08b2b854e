"""examples/asyncq.py --broker: the tutorial's producers and consumers as
separate processes sharing a NATS JetStream stream."""

from __future__ import annotations

import subprocess
import sys
import uuid

from _programs import EXAMPLES, assert_queue_delivered_everything
from natsserver import NatsServer


def test_asyncq_producers_and_consumers_in_separate_processes(nats_server: NatsServer) -> None:
    script = str(EXAMPLES / "asyncq.py")
    common = ["--broker", nats_server.url, "--stream", "asyncq" + uuid.uuid4().hex[:8]]
    common += ["--sleep-scale", "0.002"]
    consumers = [
        subprocess.Popen(
            [sys.executable, script, *common, "--role", "consumer", "-c", "3", "--idle", "3"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    producers = [
        subprocess.run(
            [sys.executable, script, *common, "--role", "producer", "-p", "3"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        for _ in range(2)
    ]
    lines: list[str] = []
    for p in producers:
        assert p.returncode == 0, p.stderr
        lines += p.stdout.splitlines()
    for c in consumers:
        out, err = c.communicate(timeout=60)
        assert c.returncode == 0, err
        lines += out.splitlines()
    # Every item is made by os.urandom, so the two producer runs never
    # collide: each item added must be got exactly once, by some consumer.
    assert_queue_delivered_everything(lines)
    assert sum(line.startswith("Program completed") for line in lines) == 4
