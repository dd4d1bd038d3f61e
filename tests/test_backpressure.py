"""Back-pressure across processes: the stream holds at most max_queue_size records."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
import redis

from lancequeue.common.errors import (
    QueueFull,
)
from lancequeue.producer import Producer
from tests.support import (
    KEYS,
    StartWriter,
    async_wait_for,
    gather,
    queued_records,
    record,
    table_ids,
)


async def test_back_pressure_blocks_enqueue_until_a_flush_makes_room(
    start_writer: StartWriter, redis_url: str, client: redis.Redis, db_uri: str
) -> None:
    writer = start_writer(max_queue_size=4, max_batch=4)
    await async_wait_for(
        lambda: asyncio.to_thread(client.hget, KEYS.config, "max_queue_size"),
        what="the writer's published max_queue_size",
    )
    await writer.stop()
    # Re-checks a full queue only once a minute: only the writer's flush message can wake it.
    made = Producer("docs", redis_url=redis_url, room_recheck_ms=60_000)
    try:
        first = made.enqueue_many([record(i) for i in range(4)])
        done: list[Any] = []

        def enqueue_fifth() -> None:
            done.append(made.enqueue(record(4), timeout=60))

        thread = threading.Thread(target=enqueue_fifth)
        thread.start()
        # It waits subscribed to the flush channel, not spinning.
        await async_wait_for(
            lambda: asyncio.to_thread(
                lambda: client.pubsub_numsub(KEYS.flushed_channel)[0][1] == 1
            ),
            what="the blocked enqueue to subscribe",
        )
        assert not done and queued_records(client) == 4
        start_writer(max_queue_size=4, max_batch=4)
        await asyncio.to_thread(thread.join, 60)
        assert len(done) == 1
        await gather([*first, done[0]])
        assert table_ids(db_uri) == [0, 1, 2, 3, 4]
    finally:
        await asyncio.to_thread(made.close)


async def test_a_full_queue_raises_queue_full_after_the_timeout(
    redis_url: str, client: redis.Redis
) -> None:
    client.hset(KEYS.config, "max_queue_size", 3)
    with Producer("docs", redis_url=redis_url) as made:
        made.enqueue_many([record(i) for i in range(3)])
        started = time.monotonic()
        with pytest.raises(QueueFull):
            made.enqueue(record(3), timeout=0.3)
        assert time.monotonic() - started >= 0.3
        futures = made.enqueue_many([record(i) for i in range(4, 6)], timeout=0.1)
        assert all(isinstance(f.exception(), QueueFull) for f in futures)
        assert queued_records(client) == 3
        made.close(timeout=0)


async def test_before_any_writer_ran_the_queue_holds_the_documented_default(
    redis_url: str, client: redis.Redis
) -> None:
    from lancequeue.common.protocol import DEFAULT_MAX_QUEUE_SIZE

    with Producer("docs", redis_url=redis_url) as made:
        tiny = [{"id": i} for i in range(DEFAULT_MAX_QUEUE_SIZE)]
        made.enqueue_many(tiny, timeout=10)
        with pytest.raises(QueueFull):
            made.enqueue({"id": -1}, timeout=0.1)
        assert queued_records(client) == DEFAULT_MAX_QUEUE_SIZE == 4096
        made.close(timeout=0)


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
        assert queued_records(client) == 300
        start_writer(max_queue_size=64, max_batch=16)
        await gather(futures)
    assert table_ids(db_uri) == list(range(300))
