"""The synchronous producer's own contract: closing, timeouts, threads, Redis down."""

from __future__ import annotations

import asyncio
import concurrent.futures
import socket
import subprocess
import sys
import threading

import pytest
import redis

from lancequeue.common.errors import (
    ConfigError,
    LancequeueError,
    ProducerClosed,
    RecordRejected,
    WriteTimeout,
)
from lancequeue.producer import Producer
from lancequeue.producer.settings import ProducerSettings
from lancequeue.writer.settings import WriterSettings
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
    with pytest.raises(WriteTimeout, match="abandoned it"):
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
    future = made.enqueue(record(1), timeout=0.3)  # buffered: enqueue does not wait for Redis
    error = future.exception(timeout=10)
    assert isinstance(error, WriteTimeout)
    assert isinstance(error, TimeoutError) and error.retriable
    assert "not sent" in str(error) and "Redis unreachable" in str(error)
    assert "will not be" in str(error)
    assert isinstance(error.__cause__, redis.ConnectionError)
    assert made.outstanding == 0  # nothing left waiting for an answer that cannot come
    made.close()


async def test_a_record_that_cannot_be_encoded_fails_alone_in_enqueue_many(
    start_writer: StartWriter, producer: Producer, db_uri: str
) -> None:
    start_writer(coalesce_ms=20)
    futures = producer.enqueue_many([record(1), {"id": 2**70}, record(3)])
    results = await gather(futures)
    assert results[0] == WRITTEN and results[2] == WRITTEN
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
    made = Producer("docs", redis_url=redis_url, room_recheck_ms=50, max_buffered_records=1)
    made.enqueue(record(0))
    sending = made.enqueue(record(1), timeout=600)  # the sender waits for room with it
    await async_wait_for(
        lambda: asyncio.to_thread(lambda: client.pubsub_numsub(KEYS.flushed_channel)[0][1] == 1),
        what="the sender to wait for room",
    )
    buffered = made.enqueue(record(2), timeout=600)  # fills the buffer
    waiting = asyncio.ensure_future(asyncio.to_thread(made.enqueue, record(3), 600))
    await async_wait_for(
        lambda: asyncio.to_thread(lambda: made.outstanding == 3 and not waiting.done()),
        what="the enqueue to wait for room in the buffer",
    )
    await asyncio.to_thread(made.close, 0)
    with pytest.raises(ProducerClosed):
        await asyncio.wait_for(waiting, 30)
    for future in (sending, buffered):
        assert isinstance(future.exception(timeout=0), ProducerClosed)
    assert made.outstanding == 0
    assert queued_records(client) == 1


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


_CLOSE_IN_A_SIGNAL_HANDLER = """
import signal, sys
from lancequeue.producer import Producer
producer = Producer("docs", redis_url=sys.argv[1], close_timeout_ms=300)
signal.signal(signal.SIGTERM, lambda *_: producer.close())
with producer._lifecycle:  # as inside enqueue(), which holds it for a moment on each call
    signal.raise_signal(signal.SIGTERM)  # a graceful shutdown's handler runs right there
print("closed" if producer.closed else "open")
"""


def test_close_in_a_signal_handler_that_interrupted_an_enqueue_returns(redis_url: str) -> None:
    """A SIGTERM handler calling close() (a common graceful shutdown) may run while the main
    thread is inside enqueue(): close() takes the lock that enqueue holds, on the same thread."""
    done = subprocess.run(
        [sys.executable, "-c", _CLOSE_IN_A_SIGNAL_HANDLER, redis_url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "closed"


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

    made.enqueue(record(1)).add_done_callback(write_again)  # unanswered: abandoned, failed
    await async_wait_for(lambda: asyncio.sleep(0, raised), what="the callback to run")
    assert "done-callback" in str(raised[0])
    await asyncio.to_thread(made.close, 0)


def test_the_size_settings_default_to_the_writer_s_limit_and_must_be_positive() -> None:
    settings = ProducerSettings("docs")
    assert settings.max_record_bytes == WriterSettings.max_record_bytes == 1_048_576
    assert settings.chunk_bytes == 8 * 1_048_576
    for name in ("max_record_bytes", "chunk_bytes"):
        with pytest.raises(ConfigError, match=name):
            ProducerSettings("docs", **{name: 0})
