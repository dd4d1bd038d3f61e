"""The producers' contract against a real writer: each test runs once per driver (``Producer``
on threads, ``AsyncProducer`` on the event loop), from one body (``tests/drivers.py``)."""

from __future__ import annotations

import asyncio

import pyarrow as pa
import pytest
import redis

from lancequeue.common.codec import encode_record
from lancequeue.common.errors import ProducerClosed, QueueFull, RecordRejected, WriteTimeout
from lancequeue.producer import AsyncProducer
from tests.drivers import Driven, MakeDriven
from tests.support import (
    KEYS,
    WRITTEN,
    StartWriter,
    async_wait_for,
    evalsha_calls,
    padded,
    queued_records,
    record,
    stream_records,
    table_ids,
)


async def sender_waits_for_room(client: redis.Redis) -> None:
    await async_wait_for(
        lambda: asyncio.to_thread(lambda: client.pubsub_numsub(KEYS.flushed_channel)[0][1] == 1),
        what="the sender to wait for room",
    )


async def queued(client: redis.Redis, count: int) -> None:
    await async_wait_for(
        lambda: asyncio.to_thread(lambda: queued_records(client) == count),
        what=f"{count} records in the queue",
    )


async def test_enqueue_returns_a_future_resolved_once_the_record_is_in_the_table(
    start_writer: StartWriter, made: Driven, db_uri: str
) -> None:
    start_writer(coalesce_ms=20)
    future = await made.enqueue(record(1))
    assert await asyncio.wait_for(future, 30) == WRITTEN
    assert table_ids(db_uri) == [1]


async def test_write_and_write_many_wait_for_the_table(
    start_writer: StartWriter, made: Driven, db_uri: str
) -> None:
    start_writer(coalesce_ms=20)
    await made.write(record(1), timeout=30)
    await made.write_many([record(i) for i in range(2, 40)], timeout=30)
    assert table_ids(db_uri) == list(range(1, 40))


async def test_many_concurrent_callers_share_batches(
    start_writer: StartWriter, made: Driven, db_uri: str
) -> None:
    flushes: list[int] = []
    start_writer(coalesce_ms=200, max_batch=64, on_flushed=lambda rs: flushes.append(len(rs)))
    futures = await asyncio.gather(*(made.enqueue(record(i), timeout=60) for i in range(100)))
    await asyncio.wait_for(asyncio.gather(*futures), 60)
    assert table_ids(db_uri) == list(range(100))
    assert sum(flushes) == 100
    assert max(flushes) >= 10  # callers within one window shared an append


async def test_a_rejected_record_raises_its_reason(start_writer: StartWriter, made: Driven) -> None:
    start_writer(schema=pa.schema([pa.field("id", pa.int64(), nullable=False)]), coalesce_ms=20)
    with pytest.raises(RecordRejected, match="missing required field 'id'"):
        await made.write({}, timeout=30)


async def test_enqueue_returns_at_once_while_the_queue_is_full_and_waits_once_the_buffer_is(
    make: MakeDriven, client: redis.Redis
) -> None:
    client.hset(KEYS.config, "max_queue_size", 2)
    made = make(max_buffered_records=1, room_recheck_ms=50)
    await made.enqueue_many([record(0), record(1)])
    await queued(client, 2)
    sending = await made.enqueue(record(2), timeout=0.5)  # taken by the sender, which waits
    await sender_waits_for_room(client)
    buffered = await made.enqueue(record(3), timeout=0.5)  # fills the buffer: returns at once
    assert not sending.done() and not buffered.done()
    with pytest.raises(QueueFull):  # no room in the buffer by its deadline
        await made.enqueue(record(4), timeout=0.2)
    for future in (sending, buffered):  # no room in the queue by their deadline
        with pytest.raises(QueueFull, match="queue full"):
            await asyncio.wait_for(future, 10)
    assert queued_records(client) == 2
    await made.close(timeout=0)


async def test_a_full_queue_wakes_the_waiting_sender_on_the_writer_s_flush(
    start_writer: StartWriter, made: Driven, client: redis.Redis, db_uri: str
) -> None:
    client.hset(KEYS.config, "max_queue_size", 2)
    first = await made.enqueue_many([record(0), record(1)])
    third = await made.enqueue(record(2), timeout=60)
    await sender_waits_for_room(client)
    assert not third.done()
    start_writer(max_queue_size=2, max_batch=2, coalesce_ms=20)
    await asyncio.wait_for(asyncio.gather(*first, third), 60)
    assert table_ids(db_uri) == [0, 1, 2]


async def test_write_times_out_without_a_writer(make: MakeDriven) -> None:
    made = make(answer_grace_ms=100)
    with pytest.raises(WriteTimeout, match="did not answer"):
        await made.write(record(1), timeout=0.2)
    assert made.outstanding == 0
    await made.close()


async def test_close_fails_unanswered_futures_and_later_enqueues(made: Driven) -> None:
    future = await made.enqueue(record(1))
    await made.close(timeout=0.05)
    assert isinstance(future.exception(), ProducerClosed)
    with pytest.raises(ProducerClosed):
        await made.enqueue(record(2))
    await made.close()  # idempotent


async def test_a_buffered_record_fails_at_its_own_deadline_not_after_the_send_ahead_of_it(
    make: MakeDriven, client: redis.Redis
) -> None:
    client.hset(KEYS.config, "max_queue_size", 1)
    made = make(room_recheck_ms=5_000)
    await made.enqueue(record(0))
    await queued(client, 1)
    await made.enqueue(record(1), timeout=600)  # the sender waits for room with it
    await sender_waits_for_room(client)
    started = asyncio.get_running_loop().time()
    late = await made.enqueue(record(2), timeout=0.2)
    with pytest.raises(QueueFull):  # not after the other record's 600 s
        await asyncio.wait_for(late, 10)
    assert asyncio.get_running_loop().time() - started < 2  # nor the 5 s recheck
    assert made.outstanding == 2
    await made.close(timeout=0)


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


async def test_enqueue_on_a_producer_closed_before_it_started_raises(made: Driven) -> None:
    await made.close()
    with pytest.raises(ProducerClosed):
        await made.enqueue(record(1))


async def test_a_record_over_max_record_bytes_fails_at_once_unsent_and_the_rest_go(
    start_writer: StartWriter, make: MakeDriven, client: redis.Redis, db_uri: str
) -> None:
    limit = len(encode_record(record(1)))  # records 1 and 3 are exactly this size: they go
    big = padded(2, 100)
    made = make(max_record_bytes=limit)
    futures = await made.enqueue_many([record(1), big, record(3)])
    assert futures[1].done()  # failed before any answer
    error = futures[1].exception()
    assert isinstance(error, RecordRejected) and "not sent" in str(error)
    size = len(encode_record(big))
    with pytest.raises(RecordRejected, match=rf"{size} bytes .*max_record_bytes \({limit}\)"):
        await made.enqueue(big)
    await queued(client, 2)
    sent = stream_records(client)
    assert [seq for seq, _ in sent] == [1, 2]  # the big one never got a sequence number
    assert [data for _, data in sent] == [encode_record(record(1)), encode_record(record(3))]
    start_writer(coalesce_ms=20)
    await asyncio.wait_for(asyncio.gather(futures[0], futures[2]), 30)
    assert table_ids(db_uri) == [1, 3]
    await made.close()


async def test_an_enqueue_script_call_carries_at_most_chunk_bytes_and_a_larger_record_alone(
    make: MakeDriven, client: redis.Redis
) -> None:
    records = [padded(1, 1000), padded(2, 1000), padded(3, 1000), padded(4, 5000), padded(5, 1000)]
    small, large = len(encode_record(records[0])), len(encode_record(records[3]))
    chunk_bytes = 2 * small + 100  # two small records, not three, not the large one
    assert 3 * small > chunk_bytes and large > chunk_bytes
    made = make(chunk_bytes=chunk_bytes)
    await made.enqueue(record(0))  # loads the script
    await queued(client, 1)
    before = evalsha_calls(client)
    futures = await made.enqueue_many(records)
    await queued(client, 6)
    assert not any(future.done() for future in futures)  # all sent, none failed
    assert evalsha_calls(client) - before == 4  # [1, 2], [3] (3 + 4 is over), [4] alone, [5]
    sent = stream_records(client)
    assert [seq for seq, _ in sent] == [1, 2, 3, 4, 5, 6]
    assert [data for _, data in sent[1:]] == [encode_record(r) for r in records]
    await made.close(timeout=0)


async def test_records_enqueued_while_a_send_is_in_flight_go_together(
    start_writer: StartWriter, made: Driven, client: redis.Redis, db_uri: str
) -> None:
    await made.enqueue(record(0))  # connects and loads the script
    await queued(client, 1)
    before = evalsha_calls(client)
    futures = await made.enqueue_each(record(i) for i in range(1, 2001))  # a plain loop
    await queued(client, 2001)
    assert evalsha_calls(client) - before < 400  # not a send each: 5 records a send at least
    start_writer(coalesce_ms=20)
    await asyncio.wait_for(asyncio.gather(*futures), 60)
    assert table_ids(db_uri) == list(range(2001))


async def test_a_bad_record_enqueued_with_others_fails_alone(
    start_writer: StartWriter, made: Driven, db_uri: str
) -> None:
    start_writer(coalesce_ms=20)
    outcomes = await asyncio.gather(
        made.enqueue(record(1)),
        made.enqueue({"id": 2, "when": object()}),
        made.enqueue(record(3)),
        return_exceptions=True,
    )
    assert isinstance(outcomes[1], RecordRejected) and "'when'" in str(outcomes[1])
    await asyncio.wait_for(asyncio.gather(outcomes[0], outcomes[2]), 30)  # type: ignore[arg-type]
    assert table_ids(db_uri) == [1, 3]
