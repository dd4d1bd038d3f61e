"""The asyncio producer against a real writer."""

from __future__ import annotations

import asyncio

import pyarrow as pa
import pytest
import redis

from lancequeue.common.codec import encode_record
from lancequeue.common.errors import ProducerClosed, QueueFull, RecordRejected, WriteTimeout
from lancequeue.producer import AsyncProducer
from tests.support import (
    KEYS,
    StartWriter,
    async_wait_for,
    queued_records,
    record,
    table_ids,
)
from tests.test_producer import evalsha_calls, padded


async def test_enqueue_returns_an_asyncio_future_resolved_once_the_record_is_in_the_table(
    start_writer: StartWriter, async_producer: AsyncProducer, db_uri: str
) -> None:
    start_writer(coalesce_ms=20)
    future = await async_producer.enqueue(record(1))
    assert isinstance(future, asyncio.Future)
    assert await asyncio.wait_for(future, 30) is None
    assert table_ids(db_uri) == [1]


async def test_write_and_write_many_wait_for_the_table(
    start_writer: StartWriter, async_producer: AsyncProducer, db_uri: str
) -> None:
    start_writer(coalesce_ms=20)
    await async_producer.write(record(1), timeout=30)
    await async_producer.write_many([record(i) for i in range(2, 40)], timeout=30)
    assert table_ids(db_uri) == list(range(1, 40))


async def test_many_concurrent_callers_share_batches(
    start_writer: StartWriter, async_producer: AsyncProducer, db_uri: str
) -> None:
    flushes: list[int] = []
    start_writer(coalesce_ms=200, max_batch=64, on_flushed=lambda rs: flushes.append(len(rs)))
    await asyncio.gather(*(async_producer.write(record(i), timeout=60) for i in range(100)))
    assert table_ids(db_uri) == list(range(100))
    assert sum(flushes) == 100
    assert max(flushes) >= 10  # callers within one window shared an append


async def test_a_rejected_record_raises_its_reason(
    start_writer: StartWriter, async_producer: AsyncProducer
) -> None:
    start_writer(schema=pa.schema([pa.field("id", pa.int64(), nullable=False)]), coalesce_ms=20)
    with pytest.raises(RecordRejected, match="missing required field 'id'"):
        await async_producer.write({}, timeout=30)


async def test_enqueue_awaits_room_in_a_full_queue_then_raises_queue_full(
    async_producer: AsyncProducer, client: redis.Redis
) -> None:
    client.hset(KEYS.config, "max_queue_size", 2)
    await async_producer.enqueue_many([record(0), record(1)])
    with pytest.raises(QueueFull):
        await async_producer.enqueue(record(2), timeout=0.2)
    assert queued_records(client) == 2
    await async_producer.close(timeout=0)


async def test_a_full_queue_wakes_the_waiting_enqueue_on_the_writer_s_flush(
    start_writer: StartWriter, async_producer: AsyncProducer, client: redis.Redis, db_uri: str
) -> None:
    client.hset(KEYS.config, "max_queue_size", 2)
    first = await async_producer.enqueue_many([record(0), record(1)])
    waiting = asyncio.create_task(async_producer.enqueue(record(2), timeout=60))
    await async_wait_for(
        lambda: asyncio.to_thread(lambda: client.pubsub_numsub(KEYS.flushed_channel)[0][1] == 1),
        what="a waiter",
    )
    assert not waiting.done()
    start_writer(max_queue_size=2, max_batch=2, coalesce_ms=20)
    third = await asyncio.wait_for(waiting, 60)
    await asyncio.wait_for(asyncio.gather(*first, third), 60)
    assert table_ids(db_uri) == [0, 1, 2]


async def test_write_times_out_without_a_writer(redis_url: str) -> None:
    async with AsyncProducer("docs", redis_url=redis_url, answer_grace_ms=100) as producer:
        with pytest.raises(WriteTimeout, match="did not answer"):
            await producer.write(record(1), timeout=0.2)
        assert producer.outstanding == 0


async def test_close_fails_unanswered_futures_and_later_enqueues(redis_url: str) -> None:
    producer = AsyncProducer("docs", redis_url=redis_url)
    future = await producer.enqueue(record(1))
    await producer.close(timeout=0.05)
    assert isinstance(future.exception(), ProducerClosed)
    with pytest.raises(ProducerClosed):
        await producer.enqueue(record(2))
    await producer.close()  # idempotent


async def test_the_timeout_covers_waiting_behind_another_sender(
    async_producer: AsyncProducer, client: redis.Redis
) -> None:
    client.hset(KEYS.config, "max_queue_size", 1)
    await async_producer.enqueue(record(0))
    blocked = asyncio.create_task(async_producer.enqueue(record(1), timeout=600))
    await async_wait_for(
        lambda: asyncio.to_thread(lambda: client.pubsub_numsub(KEYS.flushed_channel)[0][1] == 1),
        what="the first sender to wait for room",
    )
    with pytest.raises(QueueFull):  # not after the other sender's 600 s
        await async_producer.enqueue(record(2), timeout=0.2)
    blocked.cancel()
    with pytest.raises(asyncio.CancelledError):
        await blocked

    # Record 0 only: the cancelled send (it ends as the cancellation reaches it) left nothing.
    async def only_record_0() -> bool:
        return async_producer.outstanding == 1

    await async_wait_for(only_record_0, 10, "the cancelled send to forget its record")
    await async_producer.close(timeout=0)


async def test_concurrent_first_enqueues_share_one_connection_and_listener(
    start_writer: StartWriter, redis_url: str
) -> None:
    start_writer(coalesce_ms=20)
    producer = AsyncProducer("docs", redis_url=redis_url)
    futures = await asyncio.gather(*(producer.enqueue(record(i)) for i in range(5)))
    await asyncio.wait_for(asyncio.gather(*futures), 30)
    listeners = [t for t in asyncio.all_tasks() if t.get_name() == "lancequeue-replies"]
    assert len(listeners) == 1
    await producer.close()


async def test_enqueue_on_a_producer_closed_before_it_started_raises(redis_url: str) -> None:
    producer = AsyncProducer("docs", redis_url=redis_url)
    await producer.close()
    with pytest.raises(ProducerClosed):
        await producer.enqueue(record(1))


async def test_an_async_record_over_max_record_bytes_fails_at_once_unsent_and_the_rest_go(
    start_writer: StartWriter, redis_url: str, client: redis.Redis, db_uri: str
) -> None:
    limit = len(encode_record(record(1)))
    big = padded(2, 100)
    async with AsyncProducer("docs", redis_url=redis_url, max_record_bytes=limit) as producer:
        futures = await producer.enqueue_many([record(1), big, record(3)])
        assert futures[1].done()  # failed before any answer
        assert isinstance(futures[1].exception(), RecordRejected)
        size = len(encode_record(big))
        with pytest.raises(RecordRejected, match=rf"{size} bytes .*max_record_bytes \({limit}\)"):
            await producer.enqueue(big)
        assert queued_records(client) == 2
        start_writer(coalesce_ms=20)
        await asyncio.wait_for(asyncio.gather(futures[0], futures[2]), 30)
        assert table_ids(db_uri) == [1, 3]


async def test_an_async_enqueue_script_call_carries_at_most_chunk_bytes(
    redis_url: str, client: redis.Redis
) -> None:
    records = [padded(i, 1000) for i in range(1, 6)]
    chunk_bytes = 2 * len(encode_record(records[0])) + 100
    async with AsyncProducer("docs", redis_url=redis_url, chunk_bytes=chunk_bytes) as producer:
        await producer.enqueue(record(0))  # loads the script
        before = evalsha_calls(client)
        await producer.enqueue_many(records)
        assert evalsha_calls(client) - before == 3  # [1, 2], [3, 4], [5]
        assert queued_records(client) == 6
        await producer.close(timeout=0)


async def test_records_enqueued_by_concurrent_tasks_in_one_tick_go_in_one_redis_call(
    start_writer: StartWriter, async_producer: AsyncProducer, client: redis.Redis, db_uri: str
) -> None:
    await async_producer.enqueue(record(0))  # connects and loads the script
    before = evalsha_calls(client)
    futures = await asyncio.gather(*(async_producer.enqueue(record(i)) for i in range(1, 201)))
    assert evalsha_calls(client) - before == 1
    start_writer(coalesce_ms=20)
    await asyncio.wait_for(asyncio.gather(*futures), 30)
    assert table_ids(db_uri) == list(range(201))


async def test_a_bad_record_enqueued_with_others_in_one_tick_fails_alone(
    start_writer: StartWriter, async_producer: AsyncProducer, db_uri: str
) -> None:
    start_writer(coalesce_ms=20)
    outcomes = await asyncio.gather(
        async_producer.enqueue(record(1)),
        async_producer.enqueue({"id": 2, "when": object()}),
        async_producer.enqueue(record(3)),
        return_exceptions=True,
    )
    assert isinstance(outcomes[1], RecordRejected) and "'when'" in str(outcomes[1])
    await asyncio.wait_for(asyncio.gather(outcomes[0], outcomes[2]), 30)  # type: ignore[arg-type]
    assert table_ids(db_uri) == [1, 3]
