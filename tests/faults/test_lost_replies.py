"""Records a producer sent whose confirmation or answer a lost connection swallowed: sent again
under the same sequence numbers, written once, and every future settled. Real faults only: a TCP
proxy that loses Redis's reply to an EVALSHA (the enqueue script) or to a BLMOVE (the reply
listener's pop), and a Redis that forgot its scripts."""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import time

import pytest
import redis

from lancequeue.common.codec import decode_record
from lancequeue.common.errors import ProducerClosed, QueueFull
from lancequeue.common.protocol import ENQUEUE_SCRIPT
from lancequeue.producer import AsyncProducer, Producer
from tests.drivers import DRIVERS, Driven
from tests.lossy_proxy import LossyProxy
from tests.support import (
    KEYS,
    WRITTEN,
    StartWriter,
    async_wait_for,
    gather,
    queued_records,
    record,
    resolve,
    stream_holds,
    table_ids,
    wait_for,
)

# -- sequence numbers and sending again -----------------------------------------------------


async def test_concurrent_senders_add_entries_in_sequence_order(
    producer: Producer, client: redis.Redis
) -> None:
    def send(k: int) -> None:
        for n in range(5):
            producer.enqueue_many([record(k * 100 + n * 10 + i) for i in range(10)])

    with concurrent.futures.ThreadPoolExecutor(8) as threads:
        await asyncio.gather(*(asyncio.wrap_future(threads.submit(send, k)) for k in range(8)))
    entries = await stream_holds(client, 400, "all 400 records in the stream")
    assert [seq for seq, _, _ in entries] == list(range(1, 401))
    # Each thread's records are in the stream in the order it enqueued them.
    ids = [decode_record(data)["id"] for _, _, data in entries]
    for k in range(8):
        mine = [i for i in ids if i // 100 == k]
        assert mine == sorted(mine) and len(mine) == 50, (k, mine)
    producer.close(timeout=0)


async def test_a_chunk_whose_confirmation_was_lost_is_sent_again_with_the_same_seqs(
    proxy: LossyProxy, client: redis.Redis, start_writer: StartWriter, db_uri: str
) -> None:
    made = Producer("docs", redis_url=proxy.url, timeout_ms=30_000)
    try:
        first = made.enqueue(record(1))  # loads the script: the lost reply is not a NOSCRIPT
        await stream_holds(client, 1, "the first record in the stream")
        proxy.lose_next_evalsha_reply("close")
        second = made.enqueue_many([record(2), record(3)])
        await asyncio.to_thread(wait_for, lambda: proxy.lost_replies == 1, 30, "a lost reply")
        entries = await stream_holds(client, 5, "the chunk sent again")
        assert [seq for seq, _, _ in entries] == [1, 2, 3, 2, 3]
        assert entries[1][2] == entries[3][2] and entries[2][2] == entries[4][2]
        assert 0 < entries[3][1] <= entries[1][1] <= 30_000  # ttl recomputed for the resend
        start_writer(coalesce_ms=20)
        assert await gather([first, *second]) == [WRITTEN] * 3
        assert table_ids(db_uri) == [1, 2, 3]  # the writer dropped the copies
    finally:
        await asyncio.to_thread(made.close)


async def test_an_async_chunk_whose_confirmation_was_lost_is_sent_again_with_the_same_seqs(
    proxy: LossyProxy, client: redis.Redis, start_writer: StartWriter, db_uri: str
) -> None:
    async with AsyncProducer("docs", redis_url=proxy.url) as made:
        first = await made.enqueue(record(1))
        await stream_holds(client, 1, "the first record in the stream")
        proxy.lose_next_evalsha_reply("close")
        second = await made.enqueue(record(2))
        await asyncio.to_thread(wait_for, lambda: proxy.lost_replies == 1, 30, "a lost reply")
        entries = await stream_holds(client, 3, "the record sent again")
        assert [seq for seq, _, _ in entries] == [1, 2, 2]
        start_writer(coalesce_ms=20)
        await asyncio.wait_for(asyncio.gather(first, second), 30)
        assert table_ids(db_uri) == [1, 2]


async def test_a_send_whose_reply_never_comes_is_sent_again_after_the_redis_timeout(
    proxy: LossyProxy, client: redis.Redis, start_writer: StartWriter, db_uri: str
) -> None:
    made = Producer("docs", redis_url=proxy.url, redis_timeout_ms=300)
    try:
        first = made.enqueue(record(1))
        await stream_holds(client, 1, "the first record in the stream")
        proxy.lose_next_evalsha_reply("swallow")  # the connection stays open, silent
        second = made.enqueue(record(2))
        await asyncio.to_thread(wait_for, lambda: proxy.lost_replies == 1, 30, "a lost reply")
        entries = await stream_holds(client, 3, "the record sent again")
        assert [seq for seq, _, _ in entries] == [1, 2, 2]
        start_writer(coalesce_ms=20)
        assert await gather([first, second]) == [WRITTEN] * 2
        assert table_ids(db_uri) == [1, 2]
    finally:
        await asyncio.to_thread(made.close)


async def test_a_redis_that_forgot_the_enqueue_script_is_given_it_again(
    producer: Producer, client: redis.Redis
) -> None:
    producer.enqueue(record(1))
    await stream_holds(client, 1, "the first record in the stream")  # the script is loaded
    client.script_flush()
    assert client.script_exists(hashlib.sha1(ENQUEUE_SCRIPT.encode()).hexdigest()) == [False]
    second = producer.enqueue(record(2))
    entries = await stream_holds(client, 2, "the second record in the stream")
    assert [seq for seq, _, _ in entries] == [1, 2]
    assert not second.done()  # sent, not failed (no writer runs: no answer yet)
    producer.close(timeout=0)


# -- replies lost on the way ----------------------------------------------------------------


async def test_a_reply_redis_moved_but_a_lost_connection_never_delivered_still_resolves_the_record(
    proxy: LossyProxy, client: redis.Redis, start_writer: StartWriter, db_uri: str
) -> None:
    start_writer(coalesce_ms=20)  # straight to Redis: only the producer's replies are lost
    made = Producer("docs", redis_url=proxy.url, timeout_ms=10_000)
    inflight = KEYS.reply_inflight(made.producer_id)
    assert not KEYS.is_reply_key(inflight)  # a stream entry cannot make the writer push there
    try:
        proxy.lose_next_reply(b"BLMOVE", "close", then_refuse=True)
        future = made.enqueue(record(1))
        await asyncio.to_thread(wait_for, lambda: proxy.lost_replies == 1, 30, "a lost reply")
        # Redis popped the reply and the producer never got it; it waits in the in-flight
        # list, with an expiry in case the producer never comes back for it.
        assert client.llen(KEYS.reply(made.producer_id)) == 0
        assert client.llen(inflight) == 1
        assert 0 < client.pttl(inflight) <= 600_000
        assert not future.done()
        proxy.refuse(False)
        await resolve(future, 30)  # the answer, not WriteTimeout
        assert table_ids(db_uri) == [1]
        await asyncio.to_thread(wait_for, lambda: client.exists(inflight) == 0, 30, "no leftovers")
    finally:
        await asyncio.to_thread(made.close)


async def test_an_async_producer_settles_a_reply_a_lost_connection_never_delivered(
    proxy: LossyProxy, client: redis.Redis, start_writer: StartWriter, db_uri: str
) -> None:
    start_writer(coalesce_ms=20)
    async with AsyncProducer("docs", redis_url=proxy.url, timeout_ms=10_000) as made:
        proxy.lose_next_reply(b"BLMOVE", "close")
        futures = await made.enqueue_many([record(1), record(2)])
        await asyncio.wait_for(asyncio.gather(*futures), 30)
        assert proxy.lost_replies == 1
        assert table_ids(db_uri) == [1, 2]
        inflight = KEYS.reply_inflight(made.producer_id)
    assert client.exists(inflight) == 0


# -- a late answer --------------------------------------------------------------------------


@pytest.mark.parametrize("driver", DRIVERS)
async def test_a_full_queue_answered_after_the_deadline_still_fails_the_record_with_queue_full(
    driver: str, proxy: LossyProxy, client: redis.Redis, redis_url: str
) -> None:
    """Redis answers the enqueue script at a full queue after the record's deadline: that
    answer ("queue full", nothing added) settles the record at once, rather than the call being
    given up at the deadline and the record left to be abandoned ``answer_grace_ms`` later as
    a ``WriteTimeout``."""
    client.hset(KEYS.config, "max_queue_size", 1)
    filler = AsyncProducer("docs", redis_url=redis_url)  # straight to Redis, not through the proxy
    queued = await filler.enqueue(record(0))
    await async_wait_for(
        lambda: asyncio.to_thread(lambda: queued_records(client) == 1), what="a full queue"
    )
    await filler.close(timeout=0)
    with pytest.raises(ProducerClosed):  # no writer: its answer is not waited for
        await queued
    made = Driven(driver, proxy.url, room_recheck_ms=50)
    try:
        sent_at = time.monotonic()
        sending = await made.enqueue(record(1), timeout=1.0)
        await async_wait_for(  # its first try found the queue full; it tries again every 50 ms
            lambda: asyncio.to_thread(
                lambda: client.pubsub_numsub(KEYS.flushed_channel)[0][1] == 1
            ),
            what="the sender to wait for room",
        )
        proxy.hold_next_evalsha_reply()  # the next try is answered late

        async def past_the_deadline() -> bool:  # with the answer still held
            return proxy.lost_replies == 1 and time.monotonic() > sent_at + 1.0 + 0.3

        await async_wait_for(past_the_deadline, 10, "the record's deadline with its answer held")
        assert not sending.done()
        proxy.release()
        with pytest.raises(QueueFull, match="queue full"):
            await asyncio.wait_for(sending, 3)  # not after answer_grace_ms (10 s)
    finally:
        proxy.release()
        await made.close(timeout=0)
