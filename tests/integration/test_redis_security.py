"""Redis AUTH, ACL and TLS: producers, the writer and the CLI run with Redis accounts limited by
the ACL rules in PROTOCOL.md (parsed from it, so the documentation is what is tested), with the
credentials in their URLs, and over TLS.

Each server here is the tests' own: the default user is off, an ``admin`` account sets the state
up and reads ``ACL LOG``. A command a rule forgot shows there as a denial (the writer retries
Redis errors, so a missing permission would otherwise look like a hang).
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import redis
from redis.exceptions import NoPermissionError

from lancequeue.common.keys import GROUP
from tests.redis_acl import (
    ADMIN_PASSWORD,
    ORPHANS,
    PASSWORDS,
    TABLE,
    AclServer,
    acl_rules,
    command_calls,
    denials,
    leave_orphans,
    needs_selectors,
    refused,
    running_writer,
    wait_explained,
    wait_for_lease_renewal,
    write_through_both_producers,
)
from tests.support import (
    CLI,
    KEYS,
    cli_env,
    run_cli,
    table_ids,
)


def test_protocol_md_gives_rules_for_each_account_and_a_redis_7_producer() -> None:
    users = [line.split()[2] for line in acl_rules()]
    assert users == ["producer", "writer", "monitor", "operator", "producer"]
    assert [needs_selectors(line) for line in acl_rules()] == [False] * 4 + [True]


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
