"""A second local user for the tests: processes run under another uid (no supplementary
groups), which needs root; and redis-servers of the tests' own on unix sockets."""

from __future__ import annotations

import contextlib
import grp
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from lancequeue.common import embedded_redis
from tests.support import wait_for


@dataclass(frozen=True)
class OtherUser:
    """A uid (and gid) other than ours, with the interpreter and redis-server it can run."""

    uid: int
    python: str
    redis_server: str

    def run_python(self, code: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        """Run ``code`` as this user, to completion, with ``stdin`` as its input."""
        return subprocess.run(
            [self.python, "-I", "-c", code],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            cwd="/",
            env={"PATH": "/usr/bin:/bin"},
            **self._identity(),
        )

    def mkdir(self, path: Path, mode: int) -> None:
        """Create the directory ``path`` as this user, with ``mode`` exactly."""
        done = self.run_python(
            f"import os; os.mkdir({str(path)!r}); os.chmod({str(path)!r}, {mode})"
        )
        assert done.returncode == 0, done.stderr

    def try_to_read(self, paths: list[Path], secret: str) -> dict[str, str]:
        """What this user gets trying to list each directory, read each file and connect to
        each socket of ``paths``: "denied", or what it managed (with "+secret" if the bytes
        it read hold ``secret``)."""
        done = self.run_python(_READER, json.dumps([[str(p) for p in paths], secret]))
        assert done.returncode == 0, done.stderr
        found: dict[str, str] = json.loads(done.stdout)
        return found

    def _identity(self) -> dict[str, Any]:
        return {"user": self.uid, "group": self.uid, "extra_groups": []}


_READER = """
import json, os, socket, stat, sys
paths, secret = json.load(sys.stdin)
found = {}
for path in paths:
    try:
        mode = os.lstat(path).st_mode
        if stat.S_ISDIR(mode):
            found[path] = "listed %s" % os.listdir(path)
        elif stat.S_ISSOCK(mode):
            with socket.socket(socket.AF_UNIX) as conn:
                conn.connect(path)
                conn.sendall(b"PING\\r\\n")
                found[path] = "connected: %r" % conn.recv(16)
        else:
            with open(path, "rb") as file:
                data = file.read()
            found[path] = "read" + ("+secret" if secret.encode() in data else "")
    except PermissionError:
        found[path] = "denied"
    except OSError as exc:
        found[path] = repr(exc)
print(json.dumps(found))
"""


def other_user_or_skip() -> OtherUser:
    """A second local user, or skip the test (with the reason) where none can be had."""
    if os.geteuid() != 0:
        pytest.skip("running a process as a second local user needs root (to setuid a child)")
    uid = _unused_id()
    probe_code = "import os; print(os.getuid())"
    pythons = [sys.executable, "/usr/bin/python3", shutil.which("python3")]
    for python in filter(None, pythons):
        user = OtherUser(uid, python, "")
        try:
            probe = user.run_python(probe_code)
        except OSError:  # setuid refused (user namespace without that uid), or no binary
            continue
        if probe.returncode == 0 and probe.stdout.strip() == str(uid):
            break
    else:
        pytest.skip(f"cannot run a Python process as uid {uid} in this sandbox")
    servers = [embedded_redis.redis_server_binary(), shutil.which("redis-server")]
    for server in filter(None, servers):
        with contextlib.suppress(OSError):
            version = subprocess.run(
                [server, "--version"], capture_output=True, timeout=30, user=uid, group=uid
            )
            if version.returncode == 0:
                return OtherUser(uid, python, server)
    pytest.skip(f"uid {uid} can run no redis-server binary")


def _unused_id() -> int:
    for candidate in range(23_000, 24_000):
        with contextlib.suppress(KeyError):
            pwd.getpwuid(candidate)
            continue
        with contextlib.suppress(KeyError):
            grp.getgrgid(candidate)
            continue
        return candidate
    raise AssertionError("no unused uid between 23000 and 24000")


@contextlib.contextmanager
def shared_tmp() -> Iterator[Path]:
    """A fresh directory like ``/tmp`` (mode 1777: everyone may create in it), removed after."""
    path = Path(tempfile.mkdtemp(prefix="lq-shared-", dir="/tmp"))
    try:
        path.chmod(0o1777)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def redis_on_socket(
    sock: Path, workdir: Path, user: OtherUser | None = None
) -> Iterator[redis.Redis]:
    """A redis-server listening only on ``sock`` (mode 777), as ``user`` (default: us), with
    ``workdir`` as its directory; yields a client of ours connected to it."""
    binary = user.redis_server if user else embedded_redis.redis_server_binary()
    args = ["--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "777"]
    args += ["--save", "", "--appendonly", "no", "--dir", str(workdir)]
    process = subprocess.Popen(
        [binary, *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd="/",
        **(user._identity() if user else {}),
    )
    client = redis.Redis(unix_socket_path=str(sock))

    def answers() -> bool:
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return process.poll() is not None  # stop waiting: it died (asserted below)

    try:
        wait_for(answers, 15, f"a redis-server on {sock}")
        assert process.poll() is None, f"the redis-server on {sock} exited"
        yield client
    finally:
        client.close()
        process.terminate()
        process.wait(15)
        with contextlib.suppress(FileNotFoundError):
            sock.unlink()
