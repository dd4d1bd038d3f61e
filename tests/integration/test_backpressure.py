"""Back-pressure across processes: the stream holds at most max_queue_size records.

While the queue is full a producer's sender waits for room (woken by the writer's flush
message); records it cannot send by their deadline fail with ``QueueFull`` on their futures.
The caller feels it once the producer's own buffer (``max_buffered_records``) is full too:
``enqueue`` then waits for room, and raises ``QueueFull`` at its record's deadline."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from typing import Any

import pytest
import redis

from lancequeue.common.errors import ProducerClosed, QueueFull
from lancequeue.producer import Producer, WriteResult
from tests.drivers import Driven, MakeDriven
from tests.support import (
    KEYS,
    WRITTEN,
    StartWriter,
    async_wait_for,
    gather,
    queued_records,
    record,
    table_ids,
)

DEADLINE_SLACK_S = 1.0
"""How long after its deadline a record held back by a full queue may take to fail."""

AnyFuture = asyncio.Future[WriteResult] | concurrent.futures.Future[WriteResult]


async def subscribers(client: redis.Redis, count: int) -> None:
    """Until ``count`` senders wait on the table's flush channel."""
    await async_wait_for(
        lambda: asyncio.to_thread(
            lambda: client.pubsub_numsub(KEYS.flushed_channel)[0][1] == count
        ),
        what=f"{count} subscribers of the flush channel",
    )


async def queued(client: redis.Redis, count: int) -> None:
    await async_wait_for(
        lambda: asyncio.to_thread(lambda: queued_records(client) == count),
        what=f"{count} records in the queue",
    )


async def settled(future: AnyFuture, timeout: float = 30) -> tuple[BaseException | None, float]:
    """Wait for ``future``; its error (None if it succeeded) and when it was seen settled."""
    waited = (
        asyncio.wrap_future(future) if isinstance(future, concurrent.futures.Future) else future
    )
    done, _ = await asyncio.wait({waited}, timeout=timeout)
    assert done, f"not settled within {timeout}s"
    return waited.exception(), time.monotonic()


async def fails_with_queue_full_at_its_deadline(
    future: AnyFuture, enqueued_at: float, timeout: float
) -> None:
    """The record failed with ``QueueFull``: at its deadline, not sooner (room might have come)
    and not much later."""
    error, at = await settled(future, timeout + 30)
    assert isinstance(error, QueueFull), error
    assert timeout <= at - enqueued_at <= timeout + DEADLINE_SLACK_S, at - enqueued_at


async def test_back_pressure_blocks_enqueue_until_a_flush_makes_room(
    start_writer: StartWriter, make: MakeDriven, client: redis.Redis, db_uri: str
) -> None:
    writer = start_writer(max_queue_size=4, max_batch=4)
    await async_wait_for(
        lambda: asyncio.to_thread(client.hget, KEYS.config, "max_queue_size"),
        what="the writer's published max_queue_size",
    )
    await writer.stop()
    # Re-checks a full queue only once a minute: only the writer's flush message can wake it.
    # Its buffer holds one record.
    made = make(room_recheck_ms=60_000, max_buffered_records=1)
    first = await made.enqueue_many([record(i) for i in range(4)])
    await queued(client, 4)
    # The queue is full: the sender takes the next record and waits for room, subscribed to
    # the flush channel, not spinning; enqueue returned at once.
    fourth = await made.enqueue(record(4), timeout=60)
    await subscribers(client, 1)
    fifth = await made.enqueue(record(5), timeout=61)  # fills the buffer
    called_at: list[float] = []
    returned_at: list[float] = []

    async def enqueue_sixth() -> Any:
        called_at.append(time.monotonic())
        future = await made.enqueue(record(6), timeout=62)
        returned_at.append(time.monotonic())
        return future

    sixth = asyncio.create_task(enqueue_sixth())
    await async_wait_for(lambda: asyncio.sleep(0, bool(called_at)), what="the sixth enqueue")
    # The buffer is full: an enqueue waits, and raises QueueFull at its record's deadline.
    started = time.monotonic()
    with pytest.raises(QueueFull):
        await made.enqueue(record(7), timeout=0.3)
    assert time.monotonic() - started >= 0.3
    # All the while the sixth enqueue waited, and the queue held its bound.
    assert not sixth.done() and not returned_at
    assert not any(f.done() for f in [*first, fourth, fifth])
    assert queued_records(client) == 4
    writer_started_at = time.monotonic()
    start_writer(max_queue_size=4, max_batch=4)
    # Woken by the writer's flush messages: well before the sender's once-a-minute recheck.
    sixth_future = await asyncio.wait_for(sixth, 30)
    assert returned_at[0] >= writer_started_at  # only the writer's flushes made room
    landed = asyncio.gather(*first, fourth, fifth, sixth_future, return_exceptions=True)
    assert await asyncio.wait_for(landed, 30) == [WRITTEN] * 7
    assert table_ids(db_uri) == [0, 1, 2, 3, 4, 5, 6]


async def test_waiting_producers_are_woken_once_the_queue_is_half_empty_not_by_every_flush(
    start_writer: StartWriter, made: Driven, client: redis.Redis, db_uri: str
) -> None:
    """Each wake-up sends every waiting producer's calls at once; after each flush, only one
    of them would find room and the others would be refused, again and again."""
    client.hset(KEYS.config, "max_queue_size", 8)
    futures = await made.enqueue_many([record(i) for i in range(8)])
    await queued(client, 8)  # full
    listener = client.pubsub(ignore_subscribe_messages=True)
    listener.subscribe(KEYS.flushed_channel)
    start_writer(max_queue_size=8, max_batch=2, coalesce_ms=20)
    assert await asyncio.wait_for(asyncio.gather(*futures), 30) == [WRITTEN] * 8
    assert client.hget(KEYS.writer, "batches") == b"4"  # 8 records in 4 flushes of 2
    # Every message of those flushes was published before their answers were pushed.
    client.publish(KEYS.flushed_channel, "end")
    heard: list[bytes] = []
    ends = time.monotonic() + 30
    while not heard or heard[-1] != b"end":
        assert time.monotonic() < ends, f"the end marker never came; heard {heard}"
        # None for the subscription's own confirmation, which it skips
        message = await asyncio.to_thread(listener.get_message, timeout=1)
        if message is not None:
            heard.append(message["data"])
    listener.close()
    # After the flushes (of two entries each) that left 4, 2 and 0 records; not after the
    # first, which left 6 of 8.
    assert heard == [b"2", b"2", b"2", b"end"]
    assert table_ids(db_uri) == list(range(8))


async def test_a_full_queue_raises_queue_full_after_the_timeout(
    make: MakeDriven, client: redis.Redis
) -> None:
    client.hset(KEYS.config, "max_queue_size", 3)
    made = make(max_buffered_records=1)
    await made.enqueue_many([record(i) for i in range(3)])
    await queued(client, 3)
    # The queue is full. enqueue returns at once (the buffer has room); the record's future
    # fails with QueueFull at its deadline.
    started = time.monotonic()
    late = await made.enqueue(record(3), timeout=1.0)
    assert time.monotonic() - started < 1.0 and not late.done()
    await fails_with_queue_full_at_its_deadline(late, started, 1.0)
    started = time.monotonic()
    futures = await made.enqueue_many([record(i) for i in range(4, 6)], timeout=0.1)
    for future in futures:
        await fails_with_queue_full_at_its_deadline(future, started, 0.1)
    await subscribers(client, 0)  # the sender gave up on them
    # The caller feels it once the buffer is full: the sender holds one record, waiting for
    # room, and the buffer another; enqueue waits, and raises QueueFull at the deadline.
    held = [await made.enqueue(record(6), timeout=30)]
    await subscribers(client, 1)
    held.append(await made.enqueue(record(7), timeout=31))
    started = time.monotonic()
    with pytest.raises(QueueFull):
        await made.enqueue(record(8), timeout=0.3)
    assert time.monotonic() - started >= 0.3
    assert not any(f.done() for f in held)
    assert queued_records(client) == 3
    # Closing gives up on what cannot be sent at once: not written.
    await made.close(timeout=0)
    for future in held:
        error, _ = await settled(future, 10)
        assert isinstance(error, ProducerClosed), error
    assert queued_records(client) == 3


async def test_before_any_writer_ran_the_queue_holds_the_documented_default(
    redis_url: str, client: redis.Redis
) -> None:
    from lancequeue.common.protocol import DEFAULT_MAX_QUEUE_SIZE

    with Producer("docs", redis_url=redis_url, max_buffered_records=100) as made:
        tiny = [{"id": i} for i in range(DEFAULT_MAX_QUEUE_SIZE)]
        await asyncio.to_thread(made.enqueue_many, tiny, 10)
        await queued(client, DEFAULT_MAX_QUEUE_SIZE)
        started = time.monotonic()
        over = made.enqueue({"id": -1}, timeout=0.1)
        await fails_with_queue_full_at_its_deadline(over, started, 0.1)
        await subscribers(client, 0)
        # With the sender holding a record and the buffer full, enqueue itself raises.
        held = [made.enqueue({"id": -2}, timeout=9)]
        await subscribers(client, 1)
        held += made.enqueue_many([{"id": -3 - i} for i in range(100)], timeout=10)
        started = time.monotonic()
        with pytest.raises(QueueFull):
            made.enqueue({"id": -1000}, timeout=0.1)
        assert time.monotonic() - started >= 0.1
        assert not any(f.done() for f in held)
        assert queued_records(client) == DEFAULT_MAX_QUEUE_SIZE == 4096
        await asyncio.to_thread(made.close, 0)
    assert queued_records(client) == DEFAULT_MAX_QUEUE_SIZE


async def test_settings_a_client_rewrote_are_restored_by_the_writer_and_never_throttle_producers(
    start_writer: StartWriter, redis_url: str, client: redis.Redis, db_uri: str
) -> None:
    # What a producer account could do when producers shared the config hash (HINCRBY).
    writer = start_writer(max_queue_size=64, max_batch=16, lease_ms=800)
    published = {b"max_queue_size": b"64", b"max_batch": b"16"}

    def settings() -> dict[bytes, bytes]:
        fields = client.hgetall(KEYS.config)
        return {name: fields[name] for name in published if name in fields}

    await async_wait_for(lambda: asyncio.to_thread(lambda: settings() == published))
    client.hset(KEYS.config, mapping={"max_queue_size": -(2**62), "max_batch": -(2**62)})
    # The writer writes its settings again within a quarter of its lease.
    await async_wait_for(lambda: asyncio.to_thread(lambda: settings() == published), 5)
    # While no writer runs, a queue bound that is not a positive number counts as the default
    # one (4096), not as a bound nothing fits under.
    await writer.stop()
    client.hset(KEYS.config, "max_queue_size", -(2**62))
    with Producer("docs", redis_url=redis_url, pack_records=1) as producer:
        futures = producer.enqueue_many([record(i) for i in range(300)], timeout=60)
        await queued(client, 300)
        start_writer(max_queue_size=64, max_batch=16)
        await gather(futures)
    assert table_ids(db_uri) == list(range(300))
