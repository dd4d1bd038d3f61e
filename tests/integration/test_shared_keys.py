"""Keys a producer account may write (its abandoned sets, the inbox's count, the epoch) hold
nothing a client can turn against the writer or the other producers: whatever it puts there, the
writer keeps serving and every honest record lands."""

from __future__ import annotations

import asyncio
import re

import redis

from lancequeue.common.codec import encode_record
from lancequeue.common.entries import entry_fields
from lancequeue.producer import Producer
from tests.integration.test_inbox import element
from tests.support import (
    KEYS,
    StartWriter,
    gather,
    pop_answers,
    queued_records,
    record,
    table_ids,
    wait_for,
)


async def test_an_abandoned_set_stuffed_with_anything_never_stops_the_writer(
    start_writer: StartWriter, producer: Producer, client: redis.Redis, db_uri: str
) -> None:
    reply = KEYS.reply("evil")
    client.sadd(
        KEYS.abandoned("evil"), "x", "inf", "nan", "0x10", " 7", "1e5", *range(10_000, 20_000)
    )
    start_writer(coalesce_ms=10)
    client.rpush(KEYS.inbox, element(entry_fields(reply, 1, encode_record(record(1)), 60_000)))
    client.publish(KEYS.pushed_channel, 1)
    answers = await asyncio.to_thread(pop_answers, client, reply, 1)
    assert answers[1].error is None  # its own seq was not in the set: written
    await gather(producer.enqueue_many([record(i) for i in range(2, 12)]))
    assert table_ids(db_uri) == list(range(1, 12))


async def test_a_made_up_inbox_count_neither_locks_producers_out_nor_lets_the_bound_slip(
    start_writer: StartWriter, redis_url: str, client: redis.Redis, db_uri: str
) -> None:
    client.set(KEYS.inboxed, 10**17)  # no writer yet, the inbox empty
    with Producer("docs", redis_url=redis_url, pack_records=1) as made:
        futures = made.enqueue_many([record(i) for i in range(20)], timeout=60)
        wait_for(lambda: queued_records(client) == 20, 10, "20 records queued")
        client.set(KEYS.inboxed, -(10**17))  # a bound that would let anything in
        more = made.enqueue_many([record(i) for i in range(20, 30)], timeout=60)
        wait_for(lambda: queued_records(client) == 30, 10, "30 records queued")
        start_writer(coalesce_ms=10)
        await gather([*futures, *more])
    assert table_ids(db_uri) == list(range(30))


async def test_an_epoch_a_client_made_up_is_replaced_by_the_writer(
    start_writer: StartWriter, producer: Producer, client: redis.Redis, db_uri: str
) -> None:
    client.set(KEYS.epoch, b"\xff\xfe not an epoch")
    start_writer(coalesce_ms=10)
    await gather(producer.enqueue_many([record(i) for i in range(5)]))
    assert re.fullmatch(rb"[0-9a-f]{32}", client.get(KEYS.epoch) or b"")
    assert table_ids(db_uri) == list(range(5))
