"""A real three-node Redis Cluster on loopback (``--cluster-enabled yes``, ``redis-cli --cluster
create``), each node a redis-server of its own in the test's directory."""

from __future__ import annotations

import random
import shutil
import signal
import socket
import subprocess
from pathlib import Path
from typing import IO

import redis

from lancequeue.common import embedded_redis
from tests.redis_server import pongs
from tests.support import wait_for

NODES = 3
BUS_PORT_OFFSET = 10_000


def redis_cli_binary() -> str:
    """The ``redis-cli`` next to the ``redis-server`` the tests use, else the one on PATH."""
    beside = Path(embedded_redis.redis_server_binary()).with_name("redis-cli")
    if beside.exists():
        return str(beside)
    found = shutil.which("redis-cli")
    if found is None:
        raise RuntimeError("no redis-cli binary beside redis-server or on PATH")
    return found


def _node_port() -> int:
    """A free port whose cluster bus port (10000 higher) is free too, both below the range the
    kernel hands out to outgoing connections, so that no client socket takes one of them between
    this check and the node binding it."""
    lowest_ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ceiling = min(lowest_ephemeral, 65536) - BUS_PORT_OFFSET
    while True:
        port = random.randrange(max(1024, ceiling - 8000), ceiling)
        try:
            with socket.socket() as node, socket.socket() as bus:
                node.bind(("127.0.0.1", port))
                bus.bind(("127.0.0.1", port + BUS_PORT_OFFSET))
        except OSError:
            continue
        return port


class LoopbackCluster:
    """Three masters, no replicas, slots split evenly by ``redis-cli --cluster create``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.ports = [_node_port() for _ in range(NODES)]
        self.url = f"redis://127.0.0.1:{self.ports[0]}/0"
        self._processes: list[subprocess.Popen[bytes]] = []
        self._logs: list[IO[bytes]] = []

    def start(self) -> None:
        self._start_nodes()
        subprocess.run(
            [
                redis_cli_binary(),
                "--cluster",
                "create",
                *(f"127.0.0.1:{port}" for port in self.ports),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        wait_for(self._ready, 60, "every cluster node to report cluster_state:ok")

    def resume(self) -> None:
        """Start every node again after ``stop()``: each finds its slots in its nodes.conf."""
        self._start_nodes()
        wait_for(self._ready, 60, "every restarted node to report cluster_state:ok")

    def _start_nodes(self) -> None:
        for port in self.ports:
            node_dir = self.directory / f"node-{port}"
            node_dir.mkdir(parents=True, exist_ok=True)
            log = (node_dir / "redis.log").open("ab")
            self._logs.append(log)
            self._processes.append(
                subprocess.Popen(
                    [
                        embedded_redis.redis_server_binary(),
                        "--port",
                        str(port),
                        "--bind",
                        "127.0.0.1",
                        "--dir",
                        str(node_dir),
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--appendonly",
                        "yes",
                        "--save",
                        "",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        for port in self.ports:
            wait_for(lambda port=port: pongs(port), 30, f"cluster node {port} to answer")

    def _ready(self) -> bool:
        for port in self.ports:
            with redis.Redis(port=port, socket_timeout=2) as node:
                info = node.cluster("INFO")
                state = info.get("cluster_state") if isinstance(info, dict) else None
                if state not in ("ok", b"ok"):
                    return False
        return True

    def node_of(self, key: str) -> int:
        """The port of the node serving ``key``'s slot."""
        for port in self.ports:
            with redis.Redis(port=port, socket_timeout=2) as node:
                slot = node.cluster("KEYSLOT", key)
                for start, end, *rest in node.cluster("SLOTS"):
                    if start <= slot <= end and int(rest[0][1]) == port:
                        return port
        raise LookupError(key)

    def stop(self) -> None:
        for process in self._processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self._processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(15)
        for log in self._logs:
            log.close()
        self._processes.clear()
        self._logs.clear()
