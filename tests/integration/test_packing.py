"""Packed entries: several records in one stream entry, each still answered, checked and
written exactly once on its own."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable

import msgpack
import pytest
import redis

from lancequeue.common.codec import encode_record
from lancequeue.common.entries import packed_entry_fields
from lancequeue.common.errors import QueueFull, RecordRejected
from lancequeue.common.replies import Result
from lancequeue.producer import Producer
from tests.support import (
    KEYS,
    WRITTEN,
    StartWriter,
    WriterProcess,
    async_wait_for,
    gather,
    pending_count,
    pop_answers,
    queued_entries,
    queued_entry_count,
    queued_records,
    record,
    table_ids,
    table_versions,
    wait_for,
)

REPLY = KEYS.reply("p1")
StartProcess = Callable[..., WriterProcess]
DEADLINE_SLACK_S = 1.0
"""How long after its deadline a record held back by a full queue may take to fail."""


async def queued(client: redis.Redis, count: int) -> None:
    """Until ``count`` records are in the queue (``enqueue`` only buffers them)."""
    await async_wait_for(
        lambda: asyncio.to_thread(lambda: queued_records(client) == count),
        what=f"{count} records in the queue",
    )


async def sender_waits_for_room(client: redis.Redis, count: int) -> None:
    """Until ``count`` senders wait for room on the table's flush channel."""
    await async_wait_for(
        lambda: asyncio.to_thread(
            lambda: client.pubsub_numsub(KEYS.flushed_channel)[0][1] == count
        ),
        what=f"{count} senders waiting for room",
    )


def send_packed(client: redis.Redis, first_seq: int, records: list[bytes]) -> None:
    """One packed entry, exactly as PROTOCOL.md describes it."""
    fields = packed_entry_fields(REPLY, first_seq, records, 600_000)
    client.xadd(KEYS.stream, dict(zip(fields[::2], fields[1::2], strict=True)))  # type: ignore[arg-type]


def answers(client: redis.Redis, count: int, timeout: float = 60.0) -> dict[int, Result]:
    return pop_answers(client, REPLY, count, timeout)


async def test_a_bad_record_in_a_packed_entry_is_rejected_alone_and_its_entry_mates_land(
    start_writer: StartWriter, client: redis.Redis, db_uri: str
) -> None:
    start_writer(coalesce_ms=20)
    send_packed(client, 1, [encode_record(record(1))])  # creates the table: id is an integer
    await asyncio.to_thread(answers, client, 1)
    send_packed(
        client,
        10,
        [
            encode_record(record(10)),
            b"\xc1",  # not msgpack
            encode_record({"id": "eleven"}),  # does not fit the id column
            encode_record(record(13)),
        ],
    )
    results = await asyncio.to_thread(answers, client, 4)
    assert results[10].error is None and results[13].error is None
    assert isinstance(results[11].error, RecordRejected)
    assert "undecodable" in str(results[11].error)
    assert isinstance(results[12].error, RecordRejected) and "'id'" in str(results[12].error)
    assert table_ids(db_uri) == [1, 10, 13]


async def test_a_packed_entry_whose_records_cannot_be_unpacked_is_answered_for_each_record(
    start_writer: StartWriter, client: redis.Redis, db_uri: str
) -> None:
    start_writer(coalesce_ms=20)
    fields = packed_entry_fields(REPLY, 5, [encode_record(record(5))] * 3, 600_000)
    entry = dict(zip(fields[::2], fields[1::2], strict=True))
    entry[b"recs"] = msgpack.packb(["not bytes", "either", "nor this"])
    client.xadd(KEYS.stream, entry)  # type: ignore[arg-type]
    results = await asyncio.to_thread(answers, client, 3)
    assert sorted(results) == [5, 6, 7]
    for result in results.values():
        assert isinstance(result.error, RecordRejected)
        assert "array of bin" in str(result.error)


async def test_the_table_refusing_one_record_of_a_packed_entry_rejects_it_alone_in_one_commit(
    start_writer: StartWriter,
    client: redis.Redis,
    db_uri: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    start_writer(coalesce_ms=20)
    send_packed(client, 1, [encode_record(record(1))])
    await asyncio.to_thread(answers, client, 1)
    before = table_versions(db_uri)
    monkeypatch.setenv("LANCEQUEUE_REFUSE", "id=23")  # the table refuses the record with id 23
    send_packed(client, 20, [encode_record(record(i)) for i in range(20, 28)])
    results = await asyncio.to_thread(answers, client, 8)
    assert isinstance(results[23].error, RecordRejected)
    assert "the table refused it" in str(results[23].error)
    assert all(results[seq].error is None for seq in results if seq != 23)
    assert table_ids(db_uri) == [1, 20, 21, 22, 24, 25, 26, 27]
    assert table_versions(db_uri) == before + 1  # the seven landed together


def test_a_writer_killed_after_committing_packed_entries_answers_them_from_the_watermark(
    writer_process: StartProcess,
    client: redis.Redis,
    db_uri: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    send_packed(client, 1, [encode_record(record(1))])
    first = writer_process("--coalesce-ms", "10")
    answers(client, 1)  # the table exists now, with an integer id column
    first.signal(signal.SIGTERM)
    assert first.wait() == 0
    send_packed(client, 2, [encode_record(record(2)), encode_record({"id": "x"})])
    send_packed(client, 4, [encode_record(record(4)), encode_record(record(5))])
    monkeypatch.setenv("LANCEQUEUE_CRASH_AT", "after_commit")
    crashing = writer_process("--coalesce-ms", "50", "--lease-ms", "800")
    monkeypatch.delenv("LANCEQUEUE_CRASH_AT")
    assert crashing.wait() == -signal.SIGKILL, crashing.log()
    assert pending_count(client) == 4  # both entries: committed, never acked
    restarted = writer_process("--coalesce-ms", "50")
    results = answers(client, 4)
    assert [seq for seq, result in sorted(results.items()) if result.error is None] == [2, 4, 5]
    assert isinstance(results[3].error, RecordRejected)
    assert table_ids(db_uri) == [1, 2, 4, 5]
    assert "are in the table already" in restarted.log()
    wait_for(lambda: pending_count(client) == 0, 30, "acks")


async def test_a_producer_packs_one_call_s_records_into_entries_each_answered(
    start_writer: StartWriter, redis_url: str, client: redis.Redis, db_uri: str
) -> None:
    # as a writer that reads columnar entries left it
    client.hset(KEYS.config, mapping={"max_batch": 128, "columnar_batch": 128})
    with Producer("docs", redis_url=redis_url, pack_records=4) as producer:
        futures = producer.enqueue_many([record(i) for i in range(10)])  # buffered together
        await queued(client, 10)
        assert queued_entry_count(client) == 3  # one send: 4 + 4 + 2
        start_writer(coalesce_ms=20)
        assert await gather(futures) == [WRITTEN] * 10
    assert table_ids(db_uri) == list(range(10))
    wait_for(lambda: queued_records(client) == 0, 30, "the queue to empty")


@pytest.mark.parametrize(
    ("published", "version"),
    [
        ({}, b"1"),  # no writer yet, or one older than columnar entries
        ({"columnar_batch": 128}, b"2"),  # a writer that reads them, and BLAKE2b digests only
        ({"columnar_batch": 128, "protocol": 3}, b"3"),  # one that reads SHA-256 digests too
    ],
)
async def test_a_producer_sends_the_highest_version_the_writer_published_and_is_answered(
    start_writer: StartWriter,
    redis_url: str,
    client: redis.Redis,
    db_uri: str,
    published: dict[str, int],
    version: bytes,
) -> None:
    client.hset(KEYS.config, mapping={"max_batch": 128, **published})
    with Producer("docs", redis_url=redis_url, pack_records=4) as producer:
        futures = producer.enqueue_many([record(i) for i in range(6)])
        await queued(client, 6)
        assert {fields[b"v"] for fields in queued_entries(client)} == {version}
        start_writer(coalesce_ms=20)  # a writer of this release reads all three
        assert await gather(futures) == [WRITTEN] * 6
    assert table_ids(db_uri) == list(range(6))


async def test_producers_do_not_pack_until_a_writer_published_its_max_batch(
    redis_url: str, client: redis.Redis
) -> None:
    with Producer("docs", redis_url=redis_url, pack_records=4) as producer:
        producer.enqueue_many([record(i) for i in range(3)])
        await queued(client, 3)
        assert queued_entry_count(client) == 3
        producer.close(timeout=0)


async def test_the_queue_bound_counts_records_not_entries(
    start_writer: StartWriter, redis_url: str, client: redis.Redis, db_uri: str
) -> None:
    client.hset(KEYS.config, mapping={"max_queue_size": 6, "max_batch": 6, "columnar_batch": 6})
    with Producer("docs", redis_url=redis_url, pack_records=4, max_buffered_records=6) as producer:
        first = producer.enqueue_many([record(i) for i in range(6)])  # one send
        await queued(client, 6)
        assert queued_entry_count(client) == 2  # 4 + 2
        # Two entries, but six records: a seventh gets no room, and fails at its deadline.
        started = time.monotonic()
        over = producer.enqueue(record(6), timeout=0.2)
        error = await asyncio.to_thread(over.exception, 30)
        assert isinstance(error, QueueFull), error
        assert 0.2 <= time.monotonic() - started <= 0.2 + DEADLINE_SLACK_S
        # Once the sender holds a record waiting for room and the buffer is full, enqueue
        # itself waits, and raises QueueFull at the record's deadline.
        await sender_waits_for_room(client, 0)
        held = [producer.enqueue(record(7), timeout=30)]
        await sender_waits_for_room(client, 1)
        held += producer.enqueue_many([record(i) for i in range(8, 14)], timeout=31)
        started = time.monotonic()
        with pytest.raises(QueueFull):
            producer.enqueue(record(14), timeout=0.2)
        assert time.monotonic() - started >= 0.2
        assert queued_records(client) == 6
        start_writer(coalesce_ms=20, max_queue_size=6, max_batch=6)
        assert await gather(first) == [WRITTEN] * 6
        assert await gather(held) == [WRITTEN] * 7
        await asyncio.to_thread(producer.write, record(6), 30)
    assert table_ids(db_uri) == list(range(14))
