"""The synchronous producer's own contract: closing, timeouts, threads, Redis down."""

from __future__ import annotations

import asyncio
import concurrent.futures
import socket
import threading

import pytest
import redis

from lancequeue.common.errors import (
    LancequeueError,
    ProducerClosed,
    RecordRejected,
    WriteTimeout,
)
from lancequeue.producer import Producer
from tests.support import KEYS, StartWriter, async_wait_for, gather, record, table_ids


async def test_enqueue_after_close_raises_producer_closed(redis_url: str) -> None:
    made = Producer("docs", redis_url=redis_url)
    made.close()
    with pytest.raises(ProducerClosed) as caught:
        made.enqueue(record(1))
    assert isinstance(caught.value, RuntimeError)
    made.close()  # idempotent


async def test_close_waits_for_outstanding_records(
    start_writer: StartWriter, redis_url: str, db_uri: str
) -> None:
    start_writer(coalesce_ms=300)
    made = Producer("docs", redis_url=redis_url)
    futures = made.enqueue_many([record(i) for i in range(5)])
    await asyncio.to_thread(made.close)
    assert all(f.done() and f.exception() is None for f in futures)
    assert table_ids(db_uri) == list(range(5))


async def test_write_times_out_without_a_writer_and_close_fails_what_is_left(
    redis_url: str,
) -> None:
    made = Producer("docs", redis_url=redis_url, answer_grace_ms=100)
    with pytest.raises(WriteTimeout, match="did not answer"):
        await asyncio.to_thread(made.write, record(1), 0.3)
    assert made.outstanding == 0
    future = made.enqueue(record(2))
    await asyncio.to_thread(made.close, 0.1)
    assert isinstance(future.exception(), ProducerClosed)


async def test_many_threads_share_one_producer_and_every_record_lands_once(
    start_writer: StartWriter, producer: Producer, db_uri: str
) -> None:
    start_writer(coalesce_ms=20)

    def write_range(start: int) -> None:
        for i in range(start, start + 25):
            producer.write(record(i), timeout=60)

    # Threads of their own: the writer's table work runs in the loop's default executor.
    with concurrent.futures.ThreadPoolExecutor(8) as threads:
        done = [asyncio.wrap_future(threads.submit(write_range, k * 100)) for k in range(8)]
        await asyncio.wait_for(asyncio.gather(*done), 60)
    assert table_ids(db_uri) == sorted(k * 100 + i for k in range(8) for i in range(25))


def test_a_record_that_cannot_reach_redis_by_its_deadline_fails_unsent_with_write_timeout(
    redis_server: str,
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead_port = sock.getsockname()[1]
    made = Producer("docs", redis_url=f"redis://127.0.0.1:{dead_port}")
    with pytest.raises(WriteTimeout) as caught:
        made.enqueue(record(1), timeout=0.3)
    assert isinstance(caught.value, TimeoutError) and caught.value.retriable
    assert "not sent" in str(caught.value) and "Redis unreachable" in str(caught.value)
    assert "will not be" in str(caught.value)
    assert isinstance(caught.value.__cause__, redis.ConnectionError)
    assert made.outstanding == 0  # nothing left waiting for an answer that cannot come
    made.close()


async def test_a_record_that_cannot_be_encoded_fails_alone_in_enqueue_many(
    start_writer: StartWriter, producer: Producer, db_uri: str
) -> None:
    start_writer(coalesce_ms=20)
    futures = producer.enqueue_many([record(1), {"id": 2**70}, record(3)])
    results = await gather(futures)
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], RecordRejected) and "field 'id'" in str(results[1])
    assert table_ids(db_uri) == [1, 3]


def test_futures_cannot_be_cancelled_once_the_record_is_sent(producer: Producer) -> None:
    future = producer.enqueue(record(1))
    assert future.cancel() is False
    producer.close(timeout=0)


async def test_close_ends_an_enqueue_waiting_for_room_with_producer_closed(
    redis_url: str, client: redis.Redis
) -> None:
    client.hset(KEYS.config, "max_queue_size", 1)
    made = Producer("docs", redis_url=redis_url, room_recheck_ms=50)
    made.enqueue(record(0))
    waiting = asyncio.ensure_future(asyncio.to_thread(made.enqueue, record(1), 600))
    await async_wait_for(
        lambda: asyncio.to_thread(lambda: client.pubsub_numsub(KEYS.flushed_channel)[0][1] == 1),
        what="the enqueue to wait for room",
    )
    await asyncio.to_thread(made.close, 0)
    with pytest.raises(ProducerClosed):
        await asyncio.wait_for(waiting, 30)
    assert made.outstanding == 0


async def test_close_from_a_done_callback_does_not_deadlock(
    start_writer: StartWriter, redis_url: str
) -> None:
    start_writer(coalesce_ms=20)
    made = Producer("docs", redis_url=redis_url)
    closed = threading.Event()
    future = made.enqueue(record(1))
    future.add_done_callback(lambda _: (made.close(timeout=0), closed.set()))
    assert await asyncio.to_thread(closed.wait, 30)
    assert made.closed


async def test_write_in_a_done_callback_raises_instead_of_waiting_for_itself(
    redis_url: str,
) -> None:
    made = Producer("docs", redis_url=redis_url, timeout_ms=200, answer_grace_ms=0)
    raised: list[BaseException] = []

    def write_again(_: object) -> None:
        try:
            made.write(record(2))
        except LancequeueError as exc:
            raised.append(exc)

    made.enqueue(record(1)).add_done_callback(write_again)  # unanswered: the listener fails it
    await async_wait_for(lambda: asyncio.sleep(0, raised), what="the callback to run")
    assert "done-callback" in str(raised[0])
    await asyncio.to_thread(made.close, 0)
