"""A redis-server of one test's own: AOF on (fsync always), in the test's directory, on a
free port, so it can be stopped with SIGTERM and started again with its data."""

from __future__ import annotations

import signal
import socket
import subprocess
from pathlib import Path
from typing import IO

from lancequeue.common import embedded_redis
from tests.support import free_port, wait_for


def pongs(port: int) -> bool:
    """Whether a redis-server on ``port`` answers PING (not LOADING, not refusing)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RestartableRedis:
    """``redis-server --appendonly yes --appendfsync always`` on a free loopback port (with
    ``persistence=False``: no AOF, no snapshots, so a restart loses everything)."""

    def __init__(self, directory: Path, persistence: bool = True) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.persistence = persistence
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.restarts = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> None:
        self._log = (self.directory / "redis.log").open("ab")
        self._process = subprocess.Popen(
            [
                embedded_redis.redis_server_binary(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.directory),
                *(
                    ("--appendonly", "yes", "--appendfsync", "always")
                    if self.persistence
                    else ("--appendonly", "no")
                ),
                "--save",
                "",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        wait_for(lambda: pongs(self.port), 30, f"redis-server on port {self.port} to answer")

    def stop(self) -> None:
        """SIGTERM, and wait until it has exited (it fsyncs its AOF first)."""
        if self._process is not None:
            if self._process.poll() is None:
                self._process.send_signal(signal.SIGCONT)  # if frozen, else a no-op
                self._process.send_signal(signal.SIGTERM)
                try:
                    self._process.wait(15)
                except subprocess.TimeoutExpired:
                    self._process.kill()
                    self._process.wait(15)
            self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    @property
    def pid(self) -> int:
        assert self._process is not None, "not running"
        return self._process.pid

    def kill(self) -> None:
        """SIGKILL: gone at once, with whatever it had not persisted."""
        if self._process is not None:
            self._process.kill()
        self.stop()

    def freeze(self) -> None:
        """SIGSTOP: connections stay open, nothing is answered until ``thaw``."""
        assert self._process is not None, "not running"
        self._process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT after ``freeze``."""
        assert self._process is not None, "not running"
        self._process.send_signal(signal.SIGCONT)

    def thaw_if_frozen(self) -> None:
        """SIGCONT if it is running (harmless if it was not frozen)."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGCONT)

    def restart(self) -> None:
        """Stop with SIGTERM, then start again on the same port and directory."""
        self.stop()
        self.start()
        self.restarts += 1
