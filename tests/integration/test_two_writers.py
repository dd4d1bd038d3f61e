"""One writer per table: a second one waits; a replaced one stops without flushing."""

from __future__ import annotations

import asyncio

import pytest
import redis

from lancequeue.common.codec import encode_record
from lancequeue.common.errors import WriterReplaced
from lancequeue.common.replies import decode_results
from lancequeue.producer import Producer
from lancequeue.writer import Writer
from tests.support import (
    KEYS,
    StartWriter,
    async_wait_for,
    pending_count,
    record,
    resolve,
    stream_entry,
    table_ids,
)


async def test_a_second_writer_waits_while_the_first_is_alive_then_takes_over(
    start_writer: StartWriter,
    producer: Producer,
    client: redis.Redis,
    db_uri: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    first = start_writer(coalesce_ms=10, lease_ms=1200)
    await resolve(producer.enqueue(record(1)))
    second = start_writer(coalesce_ms=10, lease_ms=1200)
    await async_wait_for(
        lambda: asyncio.to_thread(lambda: "standing by until its lease expires" in caplog.text),
        what="the second writer to wait",
    )
    await resolve(producer.enqueue(record(2)))
    assert client.hget(KEYS.writer, "consumer") == first.consumer.encode()
    await first.stop()
    await resolve(producer.enqueue(record(3)))
    assert client.hget(KEYS.writer, "consumer") == second.consumer.encode()
    assert table_ids(db_uri) == [1, 2, 3]


async def test_a_replaced_writer_stops_without_flushing_what_it_holds(
    redis_url: str, db_uri: str, client: redis.Redis, producer: Producer
) -> None:
    writer = Writer(
        table="docs", redis_url=redis_url, db_uri=db_uri, lease_ms=1200, coalesce_ms=600_000
    )
    task = asyncio.create_task(writer.run())
    futures = producer.enqueue_many([record(i) for i in range(3)])
    await async_wait_for(
        lambda: asyncio.to_thread(pending_count, client), what="the writer to read the records"
    )
    # As if this writer had stalled past its expiry and another had taken the table over.
    client.set(KEYS.lease, "another-writer", px=60_000)
    with pytest.raises(WriterReplaced):
        await asyncio.wait_for(task, 30)
    assert pending_count(client) == 3  # not flushed, not acked: left for the new writer
    assert not any(f.done() for f in futures)
    assert table_ids(db_uri) == []
    assert client.get(KEYS.lease) == b"another-writer"  # not deleted by the loser
    producer.close(timeout=0)


async def test_a_writer_whose_lease_vanished_takes_it_back_and_keeps_serving(
    start_writer: StartWriter, producer: Producer, client: redis.Redis, db_uri: str
) -> None:
    writer = start_writer(coalesce_ms=10, lease_ms=1200)
    await resolve(producer.enqueue(record(1)))
    client.delete(KEYS.lease)  # as after a Redis restart without persistence
    await async_wait_for(
        lambda: asyncio.to_thread(client.get, KEYS.lease), what="the lease to return"
    )
    assert client.get(KEYS.lease).startswith(writer.consumer.encode() + b" ")  # type: ignore[union-attr]
    await resolve(producer.enqueue(record(2)))
    assert table_ids(db_uri) == [1, 2]


async def test_entries_a_dead_writer_left_pending_are_claimed_while_serving(
    start_writer: StartWriter, client: redis.Redis, db_uri: str
) -> None:
    start_writer(coalesce_ms=10, lease_ms=400)
    await async_wait_for(
        lambda: asyncio.to_thread(client.exists, KEYS.writer), what="the writer to start"
    )
    reply_key = KEYS.reply("orphaned")
    client.xadd(KEYS.stream, stream_entry(reply_key, 1, encode_record(record(7))))
    # A writer that read the entry and died, as far as Redis can tell.
    client.xreadgroup("writers", "dead-writer", {KEYS.stream: ">"}, count=1)
    popped = await asyncio.to_thread(client.blpop, [reply_key], 60)
    assert popped is not None and decode_results(popped[1])[0].error is None
    assert table_ids(db_uri) == [7]
    consumers = {c["name"] for c in client.xinfo_consumers(KEYS.stream, "writers")}
    assert b"dead-writer" not in consumers and "dead-writer" not in consumers
