"""The inbox: whatever a client pushes onto it, the writer moves it into the stream without
stopping, answers what names a reply key, and keeps the queue's counts true."""

from __future__ import annotations

import asyncio

import pytest
import redis

from lancequeue.common.codec import encode_record
from lancequeue.common.entries import entry_fields
from lancequeue.producer import Producer
from tests.support import (
    KEYS,
    StartWriter,
    async_wait_for,
    pop_answers,
    record,
    resolve,
    table_ids,
)


def element(fields: list[bytes | str], at: str = "") -> bytes:
    """An inbox element as the enqueue script builds it (``at`` empty: pushed by hand)."""
    raw = [field.encode() if isinstance(field, str) else field for field in fields]
    lengths = ",".join(str(len(field)) for field in raw)
    return f"{at}:{lengths};".encode() + b"".join(raw)


async def test_hostile_elements_never_stop_the_writer_and_the_counts_stay_true(
    start_writer: StartWriter,
    producer: Producer,
    client: redis.Redis,
    db_uri: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    start_writer(coalesce_ms=10)
    reply = KEYS.reply("by-hand")
    hostile = [
        b"",
        b"no header at all",
        b"\xff" * 1000,
        b"12:3,3;abc",  # an odd number of fields
        b":99999999999,1;ab",  # lengths past its end
        b":" + b"1," * 70 + b"1;" + b"x" * 71,  # more fields than an entry has
        element(["v", "1", "reply", reply, "seq", "1", "n", "nan", "recs", b"\x90"]),
        element(["v", "1", "reply", reply, "seq", "2", "ttl", "1e9", "rec", b"\x80"], "99" * 8),
    ]
    client.rpush(KEYS.inbox, *hostile)
    client.incrby(KEYS.inboxed, 2**62)  # a count a client made up
    good = element(entry_fields(reply, 3, encode_record(record(3)), 60_000))
    client.rpush(KEYS.inbox, good)
    client.publish(KEYS.pushed_channel, 1)
    answers = await asyncio.to_thread(pop_answers, client, reply, 3)
    assert answers[3].error is None
    assert "'n'" in str(answers[1].error) and "'ttl'" in str(answers[2].error)
    await resolve(producer.enqueue(record(4)))  # the writer is still serving
    assert table_ids(db_uri) == [3, 4]
    await async_wait_for(lambda: asyncio.to_thread(lambda: client.xlen(KEYS.stream) == 0))
    assert client.llen(KEYS.inbox) == 0
    assert client.get(KEYS.queued) == b"0" and client.get(KEYS.inboxed) == b"0"
    failed_reads = [
        r.getMessage() for r in caplog.records if "reading the stream" in r.getMessage()
    ]
    assert not failed_reads, failed_reads
