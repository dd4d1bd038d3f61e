"""``linger_ms``: an optional extra wait so records enqueued one by one share sends, from a
background thread, with a bounded buffer."""

from __future__ import annotations

import asyncio
import concurrent.futures
import subprocess
import sys

import pytest
import redis

from lancequeue.common.errors import ConfigError, ProducerClosed, QueueFull
from lancequeue.common.protocol import ENQUEUE_SCRIPT
from lancequeue.producer import AsyncProducer, Producer
from lancequeue.producer.commands import WRITER_UNTIL_SCRIPT
from tests.support import (
    KEYS,
    StartWriter,
    async_wait_for,
    cli_env,
    evalsha_calls,
    queued_entry_count,
    record,
    stream_records,
    table_ids,
)


async def test_records_enqueued_one_by_one_within_the_linger_share_one_send_and_all_land(
    start_writer: StartWriter, redis_url: str, client: redis.Redis, db_uri: str
) -> None:
    # as a writer publishes it: producers may pack
    client.hset(KEYS.config, mapping={"max_batch": 128, "columnar_batch": 128})
    for script in (ENQUEUE_SCRIPT, WRITER_UNTIL_SCRIPT):  # the count below: no script loads
        client.script_load(script)
    made = Producer("docs", redis_url=redis_url, linger_ms=1_000)
    calls_before = evalsha_calls(client)
    futures = [made.enqueue(record(i)) for i in range(50)]
    assert made.outstanding == 50
    await async_wait_for(
        lambda: asyncio.to_thread(lambda: queued_entry_count(client) > 0), what="the send"
    )
    # one send, after the first connection's one look for a live writer
    assert evalsha_calls(client) - calls_before == 2
    assert [seq for seq, _ in stream_records(client)] == list(range(1, 51))
    assert queued_entry_count(client) == 1  # one packed entry
    start_writer(coalesce_ms=20)
    done, _ = await asyncio.to_thread(concurrent.futures.wait, futures, 60)
    assert len(done) == 50 and all(future.exception() is None for future in futures)
    assert table_ids(db_uri) == list(range(50))
    made.close()


async def test_enqueue_returns_before_the_linger_passes_and_close_sends_what_is_buffered(
    redis_url: str, client: redis.Redis
) -> None:
    made = Producer("docs", redis_url=redis_url, linger_ms=600_000)
    future = made.enqueue(record(1))
    assert queued_entry_count(client) == 0 and not future.done()
    await asyncio.to_thread(made.close, 0)
    assert queued_entry_count(client) == 1  # sent at close; no writer answered it
    assert isinstance(future.exception(), ProducerClosed)


async def test_a_full_buffer_makes_enqueue_wait_and_fail_with_queue_full_at_its_deadline(
    redis_url: str, client: redis.Redis
) -> None:
    client.hset(KEYS.config, "max_queue_size", 1)
    made = Producer(
        "docs", redis_url=redis_url, linger_ms=1, max_buffered_records=2, room_recheck_ms=50
    )
    made.enqueue(record(0))  # fills the queue
    made.enqueue(record(1))  # taken by the sender thread, which waits for room
    await async_wait_for(
        lambda: asyncio.to_thread(lambda: client.pubsub_numsub(KEYS.flushed_channel)[0][1] == 1),
        what="the sender to wait for room",
    )
    buffered = [made.enqueue(record(i), timeout=600) for i in (2, 3)]
    with pytest.raises(QueueFull, match="queue full"):
        await asyncio.to_thread(made.enqueue, record(4), 0.3)
    assert made.outstanding == 4
    await asyncio.to_thread(made.close, 0)
    for future in buffered:
        assert isinstance(future.exception(), ProducerClosed)
    assert queued_entry_count(client) == 1


def test_linger_ms_must_not_be_negative(redis_url: str) -> None:
    for kind in (Producer, AsyncProducer):
        with pytest.raises(ConfigError, match="linger_ms"):
            kind("docs", redis_url=redis_url, linger_ms=-1)


def test_a_process_that_exits_without_close_still_sends_what_it_buffered(
    redis_url: str, client: redis.Redis
) -> None:
    script = (
        "from lancequeue.producer import Producer\n"
        "from tests.support import record\n"
        f"producer = Producer('docs', redis_url={redis_url!r}, linger_ms=600_000,"
        " close_timeout_ms=100)\n"
        "producer.enqueue(record(1))\n"  # and exit: no close(), no with-block
    )
    done = subprocess.run(
        [sys.executable, "-W", "ignore::ResourceWarning", "-c", script],
        capture_output=True, text=True, timeout=60, env=cli_env(),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert queued_entry_count(client) == 1
