"""Producers through Redis restarts and outages, and their records' deadlines.

Real faults only: a redis-server of the test's own (AOF on) stopped with SIGTERM and started
again on the same port and directory, and a TCP proxy that loses Redis's reply to the enqueue
script. Replies lost on the way are ``test_lost_replies.py``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import socket
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis

from lancequeue.common.errors import OutcomeUnknown, ProducerClosed, WriteTimeout
from lancequeue.producer import AsyncProducer, Producer
from tests.lossy_proxy import LossyProxy
from tests.redis_server import RestartableRedis
from tests.support import (
    KEYS,
    StartWriter,
    queued_records,
    record,
    resolve,
    stream_holds,
    stream_ttls,
    table_ids,
    wait_for,
)

# -- deadlines ------------------------------------------------------------------------------


async def test_a_record_the_writer_does_not_answer_by_its_deadline_plus_the_grace_fails(
    redis_url: str, client: redis.Redis
) -> None:
    made = Producer("docs", redis_url=redis_url, timeout_ms=300, answer_grace_ms=200)
    try:
        future = made.enqueue(record(1))
        (seq, ttl, _), *more = await stream_holds(client, 1, "the record in the stream")
        assert not more
        assert seq == 1 and 0 < ttl <= 300  # the entry carries the time left to its deadline
        with pytest.raises(WriteTimeout) as caught:
            await resolve(future, 30)
        message = str(caught.value)
        assert "did not answer" in message and "will not write" in message
        assert made.outstanding == 0
    finally:
        await asyncio.to_thread(made.close, 0)


async def test_an_async_record_the_writer_does_not_answer_in_time_fails(redis_url: str) -> None:
    async with AsyncProducer(
        "docs", redis_url=redis_url, timeout_ms=300, answer_grace_ms=200
    ) as made:
        future = await made.enqueue(record(1))
        with pytest.raises(WriteTimeout, match="did not answer"):
            await asyncio.wait_for(future, 30)
        assert made.outstanding == 0


async def test_a_record_whose_deadline_passed_while_redis_was_down_fails_and_is_never_written(
    own_redis: RestartableRedis, start_writer: StartWriter, db_uri: str
) -> None:
    made = Producer("docs", redis_url=own_redis.url, max_buffered_records=1)
    try:
        await asyncio.to_thread(own_redis.stop)
        # enqueue returns at once; the sender keeps trying until the record's deadline, then
        # fails its future, at that deadline.
        started = time.monotonic()
        unsent = made.enqueue(record(1), 2.0)
        queued = made.enqueue(record(2), 3.0)  # waits in the buffer (one record) behind it
        # The buffer is full: an enqueue waits for room until its own deadline, and raises.
        with pytest.raises(WriteTimeout) as caught:
            await asyncio.to_thread(made.enqueue, record(3), 0.5)
        waited_s = time.monotonic() - started
        assert 0.5 <= waited_s < 1.5, waited_s
        assert "not sent" in str(caught.value) and "will not be" in str(caught.value)
        assert "Redis unreachable" in str(caught.value)
        for future, deadline_s in ((unsent, 2.0), (queued, 3.0)):
            with pytest.raises(WriteTimeout) as caught:
                await resolve(future, 30)
            failed_s = time.monotonic() - started
            assert deadline_s <= failed_s < deadline_s + 1.0, failed_s  # at its deadline
            message = str(caught.value)
            assert "not sent" in message and "will not be" in message, message
            assert "Redis unreachable" in message, message
        # (the sender counts a record out just after failing its future)
        await asyncio.to_thread(wait_for, lambda: made.outstanding == 0, 5, "nothing outstanding")
        await asyncio.to_thread(own_redis.start)
        start_writer(redis_url=own_redis.url, coalesce_ms=20)
        # The same producer reconnects; once its next record is answered, the writer has
        # been through everything sent before it.
        await asyncio.to_thread(made.write, record(4), 30)
        assert table_ids(db_uri) == [4]
    finally:
        await asyncio.to_thread(made.close)


async def test_a_record_sent_unconfirmed_then_cut_off_past_its_deadline_is_never_written(
    proxy: LossyProxy, client: redis.Redis, start_writer: StartWriter, db_uri: str
) -> None:
    made = Producer("docs", redis_url=proxy.url, answer_grace_ms=300)
    try:
        first = made.enqueue(record(0), timeout=60)  # loads the script; written later
        await stream_holds(client, 1, "the first record in the stream")
        proxy.lose_next_evalsha_reply("close", then_refuse=True)
        # Redis added it, but the producer cannot know: it retries until the deadline, then
        # leaves the record to the writer's answer, which cannot come either.
        lost = made.enqueue(record(1), 0.5)
        await asyncio.to_thread(wait_for, lambda: proxy.lost_replies == 1, 30, "a lost reply")
        assert [seq for seq, _, _ in stream_ttls(client)] == [1, 2]
        # Nor can it abandon the record in Redis: it cannot know whether a writer claimed it.
        with pytest.raises(OutcomeUnknown, match="may or may not be in the table"):
            await resolve(lost, 30)
        start_writer(coalesce_ms=20)  # after record 1's deadline: it drops it
        proxy.refuse(False)
        await resolve(first, 30)
        assert table_ids(db_uri) == [0]
    finally:
        await asyncio.to_thread(made.close, 0)


async def test_close_ends_an_enqueue_waiting_for_redis_with_producer_closed(
    own_redis: RestartableRedis, caplog: pytest.LogCaptureFixture
) -> None:
    made = Producer("docs", redis_url=own_redis.url, max_buffered_records=2)
    await asyncio.to_thread(own_redis.stop)
    sending = made.enqueue(record(1), 600)
    await asyncio.to_thread(
        wait_for, lambda: "reconnecting" in caplog.text, 30, "the sender to wait for Redis"
    )
    # Two more records fill the buffer behind the stuck send; the third waits for room.
    waiting = asyncio.ensure_future(
        asyncio.to_thread(made.enqueue_many, [record(2), record(3), record(4)], 600)
    )
    await asyncio.to_thread(
        wait_for, lambda: made.outstanding == 3, 30, "the enqueue to wait for room"
    )
    assert not waiting.done()
    started = time.monotonic()
    await asyncio.to_thread(made.close, 0)
    futures = await asyncio.wait_for(waiting, 30)
    assert time.monotonic() - started < 5, "close() waited for Redis"
    for future in [sending, *futures]:
        assert future.done()
        with pytest.raises(ProducerClosed, match="not written"):
            await resolve(future, 5)
    assert made.outstanding == 0


# -- Redis restarts -------------------------------------------------------------------------


async def test_a_producer_keeps_writing_through_a_redis_restart_and_every_record_is_answered(
    own_redis: RestartableRedis, start_writer: StartWriter, db_uri: str
) -> None:
    start_writer(redis_url=own_redis.url, coalesce_ms=20)
    made = Producer("docs", redis_url=own_redis.url, timeout_ms=30_000)
    answered: list[int] = []

    def produce() -> None:
        for start in range(0, 120, 4):
            made.write_many([record(i) for i in range(start, start + 4)])
            answered.extend(range(start, start + 4))

    with concurrent.futures.ThreadPoolExecutor(1) as thread:
        producing = asyncio.wrap_future(thread.submit(produce))
        await asyncio.to_thread(wait_for, lambda: len(answered) >= 20, 30, "20 records")
        await asyncio.to_thread(own_redis.restart)
        await asyncio.wait_for(producing, 60)  # raises the first record's error, if any
    await asyncio.to_thread(made.close)
    assert answered == list(range(120))
    assert table_ids(db_uri) == list(range(120))


@pytest.fixture
async def own_async_producer(own_redis: RestartableRedis) -> AsyncIterator[AsyncProducer]:
    async with AsyncProducer("docs", redis_url=own_redis.url, timeout_ms=30_000) as made:
        yield made


async def test_an_async_producer_keeps_writing_through_a_redis_restart(
    own_redis: RestartableRedis,
    start_writer: StartWriter,
    own_async_producer: AsyncProducer,
    db_uri: str,
) -> None:
    start_writer(redis_url=own_redis.url, coalesce_ms=20)
    answered: list[int] = []

    async def produce(lane: int) -> None:
        for i in range(lane, 120, 4):
            await own_async_producer.write(record(i))
            answered.append(i)

    producing = asyncio.gather(*(produce(lane) for lane in range(4)))
    try:
        await asyncio.to_thread(wait_for, lambda: len(answered) >= 20, 30, "20 records")
        await asyncio.to_thread(own_redis.restart)
        await asyncio.wait_for(producing, 60)
    finally:
        producing.cancel()
    assert sorted(answered) == list(range(120))
    assert table_ids(db_uri) == list(range(120))


def test_a_done_callback_raising_system_exit_leaves_no_record_of_its_batch_unsettled() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead_port = sock.getsockname()[1]
    made = Producer("docs", redis_url=f"redis://127.0.0.1:{dead_port}", close_timeout_ms=100)
    futures = made.enqueue_many([record(i) for i in range(5)], timeout=0.3)

    def exit_now(_: object) -> None:
        raise SystemExit("a callback that exits")

    futures[0].add_done_callback(exit_now)
    done, _ = concurrent.futures.wait(futures, 10)
    assert len(done) == 5  # the others of its batch were failed all the same
    assert all(isinstance(future.exception(), WriteTimeout) for future in futures)
    made.close()


def test_nothing_is_sent_after_a_close_from_a_done_callback_even_if_redis_comes_back(
    tmp_path: Path,
) -> None:
    server = RestartableRedis(tmp_path / "redis")  # not started yet: Redis is down
    made = Producer("docs", redis_url=server.url, linger_ms=1_000)
    closed = threading.Event()

    def close_then_start_redis(_: object) -> None:
        made.close()  # on the sender thread, while it holds the chunk of both records
        server.start()
        closed.set()

    first = made.enqueue(record(1), timeout=2)
    first.add_done_callback(close_then_start_redis)
    second = made.enqueue(record(2), timeout=4)  # the same chunk (the linger), a later deadline
    try:
        assert isinstance(second.exception(timeout=30), ProducerClosed)
        assert closed.wait(30)
        with redis.Redis.from_url(server.url) as client:
            assert client.llen(KEYS.inbox) == 0 and queued_records(client) == 0
    finally:
        server.stop()
