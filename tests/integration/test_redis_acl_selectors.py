"""On Redis 7 and later, the producer account of PROTOCOL.md uses ACL selectors: it can only append
to the queue, never trim, date, expire or delete it, nor destroy or lock out what other producers
queued."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.exceptions import NoPermissionError

from lancequeue.common.keys import GROUP
from lancequeue.producer import Producer
from tests.redis_acl import (
    TABLE,
    AclServer,
    leave_orphans,
    running_writer,
)
from tests.support import (
    KEYS,
    gather,
    record,
    table_ids,
    wait_for,
)


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
