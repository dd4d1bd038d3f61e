"""A record claimed by the writer gets its true answer however late its commit, and a producer
that cannot know (Redis forgot the claim) says so: ``WriteTimeout`` never names a record that
ends up in the table."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from typing import Any

import pyarrow as pa
import pytest
import redis

from lancequeue.common.errors import OutcomeUnknown, WriteTimeout
from lancequeue.producer import Producer
from lancequeue.writer.table import TableSink
from tests.support import (
    KEYS,
    StartWriter,
    queued_entry_count,
    resolve,
    table_ids,
    wait_for,
)

SCHEMA = pa.schema([pa.field("id", pa.int64())])


def slow_commits(monkeypatch: pytest.MonkeyPatch, before: Any, stall_s: float) -> threading.Event:
    """Make the writer's first commit call ``before()`` then stall ``stall_s`` (a slow disk or
    object store, after the batch was claimed); returns an event set once it committed."""
    committed = threading.Event()
    commit = TableSink._commit_sync

    def slow(self: TableSink, *args: Any) -> int:
        if not committed.is_set():
            before()
            time.sleep(stall_s)  # the slow storage itself, not a wait for a condition
        version = commit(self, *args)
        committed.set()
        return version

    monkeypatch.setattr(TableSink, "_commit_sync", slow)
    return committed


async def test_a_record_claimed_before_its_deadline_waits_for_a_commit_past_it_and_is_ok(
    start_writer: StartWriter, redis_url: str, db_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The claim outlives everything the writer keeps for --reply-ttl-ms, which is far shorter.
    committed = slow_commits(monkeypatch, lambda: None, stall_s=4.0)
    start_writer(reply_ttl_ms=1000, schema=SCHEMA, coalesce_ms=10)
    made = Producer("docs", redis_url=redis_url, answer_grace_ms=1000)
    try:
        future = made.enqueue({"id": 7}, timeout=1)
        await resolve(future, 30)  # ok: after its deadline + grace, as its commit came then
        assert committed.is_set() and table_ids(db_uri) == [7]
    finally:
        await asyncio.to_thread(made.close, 0)


async def test_a_claimed_record_redis_then_forgot_ends_unknown_not_write_timeout(
    start_writer: StartWriter,
    redis_url: str,
    client: redis.Redis,
    db_uri: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Claimed, then Redis loses its data (no persistence, a failover to a replica the claim had
    # not reached) while the batch's files are written: the producer cannot tell.
    committed = slow_commits(monkeypatch, client.flushall, stall_s=3.0)
    start_writer(schema=SCHEMA, coalesce_ms=10)
    made = Producer("docs", redis_url=redis_url, answer_grace_ms=500)
    try:
        future = made.enqueue({"id": 7}, timeout=1)
        await asyncio.to_thread(concurrent.futures.wait, [future], 30)
        await asyncio.to_thread(committed.wait, 30)
        assert table_ids(db_uri) == [7]
        assert isinstance(future.exception(), OutcomeUnknown), future.exception()
    finally:
        await asyncio.to_thread(made.close, 0)


async def test_a_deadline_is_judged_in_redis_time_no_entry_id_moves(
    start_writer: StartWriter, redis_url: str, client: redis.Redis, db_uri: str
) -> None:
    # The stream's ids run an hour ahead of Redis's clock (an entry added with an id of its
    # choosing, as a producer of an earlier release could): what is added after gets ids there.
    hour_ahead = int(client.time()[0] + 3600) * 1000
    client.xadd(KEYS.stream, {"v": "1"}, id=f"{hour_ahead}-0")
    with Producer("docs", redis_url=redis_url, answer_grace_ms=60_000) as producer:
        futures = producer.enqueue_many([{"id": i} for i in range(3)], timeout=0.3)
        # The sender pushes them after enqueue_many returned: time counts from the push.
        wait_for(lambda: queued_entry_count(client) > 1, 10, "the records pushed (one call)")
        pushed_ms = int(client.time()[0]) * 1000
        wait_for(lambda: int(client.time()[0]) * 1000 > pushed_ms + 1000, 10, "the deadline")
        start_writer(schema=SCHEMA, coalesce_ms=10)
        for future in futures:
            with pytest.raises(WriteTimeout, match="deadline"):
                await resolve(future)
    assert table_ids(db_uri) == []
