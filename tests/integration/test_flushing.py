"""Coalescing, flushing, answering: the writer's loop against real Redis and LanceDB."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from typing import Any

import lancedb
import pyarrow as pa
import pytest
import redis

from lancequeue.common.codec import encode_record
from lancequeue.common.entries import packed_entry_fields
from lancequeue.common.errors import (
    WriteFailed,
)
from lancequeue.common.replies import decode_results
from lancequeue.producer import Producer, WriteResult
from tests.support import (
    KEYS,
    WRITTEN,
    StartWriter,
    async_wait_for,
    broken_storage,
    flush_recorder,
    gather,
    pending_count,
    pop_answers,
    record,
    resolve,
    stream_entry,
    table_ids,
    table_versions,
    writer_serving,
)


async def test_a_written_record_is_in_the_table_when_its_future_resolves(
    start_writer: StartWriter, producer: Producer, db_uri: str
) -> None:
    start_writer()
    await resolve(producer.enqueue(record(1)))
    assert table_ids(db_uri) == [1]
    row = lancedb.connect(db_uri).open_table("docs").to_arrow().to_pylist()[0]
    assert row["text"] == "document 1"
    assert row["vector"] == pytest.approx(record(1)["vector"].tolist())


async def test_vector_columns_become_fixed_size_lists_of_float32(
    start_writer: StartWriter, producer: Producer, db_uri: str
) -> None:
    start_writer()
    await resolve(producer.enqueue({"id": 1, "vector": [0.5, 1.5, 2.5], "text": "x"}))
    schema = lancedb.connect(db_uri).open_table("docs").schema
    assert schema.field("vector").type == pa.list_(pa.float32(), 3)


async def test_records_sent_together_flush_at_max_batch_one_append_each(
    start_writer: StartWriter, producer: Producer, db_uri: str, client: redis.Redis
) -> None:
    flushes, on_flushed = flush_recorder()
    start_writer(max_batch=10, coalesce_ms=60_000, on_flushed=on_flushed)
    await writer_serving(client)  # producers pack no more than the writer's max_batch
    futures = producer.enqueue_many([record(i) for i in range(30)])
    results = await gather(futures)
    assert results == [WRITTEN] * 30
    assert [len(batch) for batch in flushes] == [10, 10, 10]
    # one table version for the creation, two for the writer's fence, then one per batch
    assert table_versions(db_uri) == 1 + 2 + 3
    assert table_ids(db_uri) == list(range(30))


async def test_under_a_backlog_a_batch_due_by_its_window_is_topped_up_to_max_batch(
    start_writer: StartWriter, client: redis.Redis, db_uri: str
) -> None:
    reply_key = KEYS.reply("p1")
    packed = packed_entry_fields(
        reply_key, 1, [encode_record(record(i)) for i in range(1, 6)], 600_000
    )
    seconds, micros = client.time()  # type: ignore[misc]
    ten_s_ago = f"{seconds * 1000 + micros // 1000 - 10_000}"
    with client.pipeline() as pipe:  # a backlog: entries that have waited 10 s, by their ids
        pipe.xadd(
            KEYS.stream, dict(zip(packed[::2], packed[1::2], strict=True)), id=f"{ten_s_ago}-0"
        )  # type: ignore[arg-type]
        for seq in range(6, 36):
            entry = stream_entry(reply_key, seq, encode_record(record(seq)))
            pipe.xadd(KEYS.stream, entry, id=f"{ten_s_ago}-{seq}")
        pipe.execute()
    flushes, on_flushed = flush_recorder()
    start_writer(max_batch=10, coalesce_ms=50, on_flushed=on_flushed)
    results = await asyncio.to_thread(pop_answers, client, reply_key, 35)
    assert all(result.error is None for result in results.values())
    # The first read brings 14 records (it expects one per entry): a full batch of 10, then the
    # 4 left over are topped up with what else is waiting rather than flushed alone.
    assert [len(batch) for batch in flushes] == [10, 10, 10, 5]
    assert table_ids(db_uri) == list(range(1, 36))


async def test_records_arriving_within_the_window_flush_together_once_it_expires(
    start_writer: StartWriter, producer: Producer
) -> None:
    flushes, on_flushed = flush_recorder()
    start_writer(max_batch=128, coalesce_ms=1500, on_flushed=on_flushed)
    started = time.monotonic()
    futures = [producer.enqueue(record(i)) for i in range(3)]
    await gather(futures)
    assert [len(batch) for batch in flushes] == [3]
    assert time.monotonic() - started >= 1.5  # the window was waited out, not cut short


async def test_a_failed_append_answers_every_record_of_the_batch_and_the_writer_keeps_serving(
    start_writer: StartWriter, producer: Producer, db_uri: str
) -> None:
    writer = start_writer(max_batch=5, coalesce_ms=60_000, flush_retries=1, retry_backoff_ms=10)
    await resolve(producer.enqueue_many([record(i) for i in range(5)])[0])
    with broken_storage(db_uri):
        failed = await gather(producer.enqueue_many([record(i) for i in range(10, 15)]))
    assert all(isinstance(r, WriteFailed) for r in failed)
    assert {r.error_type for r in failed} == {"OSError"}
    ok = await gather(producer.enqueue_many([record(i) for i in range(20, 25)]))
    assert ok == [WRITTEN] * 5
    assert table_ids(db_uri) == [0, 1, 2, 3, 4, 20, 21, 22, 23, 24]
    assert writer._running


async def test_an_append_that_fails_for_a_while_is_retried_and_lands(
    start_writer: StartWriter,
    producer: Producer,
    db_uri: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    start_writer(max_batch=5, coalesce_ms=60_000, flush_retries=50, retry_backoff_ms=20)
    await resolve(producer.enqueue_many([record(i) for i in range(5)])[0])
    with broken_storage(db_uri):
        futures = producer.enqueue_many([record(i) for i in range(10, 15)])
        await async_wait_for(
            lambda: asyncio.to_thread(lambda: "retry 2/50" in caplog.text),
            what="the writer to retry the append",
        )
    assert await gather(futures) == [WRITTEN] * 5
    assert table_ids(db_uri) == [0, 1, 2, 3, 4, 10, 11, 12, 13, 14]


async def test_a_batch_the_table_refuses_is_bisected_so_only_the_refused_record_fails(
    start_writer: StartWriter,
    producer: Producer,
    db_uri: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LANCEQUEUE_REFUSE", "id=13")  # the table refuses the record with id 13
    start_writer(max_batch=8, coalesce_ms=60_000)
    results = await gather(producer.enqueue_many([record(i) for i in range(10, 18)]))
    assert [type(r).__name__ for r in results] == ["WriteResult"] * 3 + ["RecordRejected"] + [
        "WriteResult"
    ] * 4
    assert "the table refused it" in str(results[3]) and "id=13" in str(results[3])
    assert table_ids(db_uri) == [10, 11, 12, 14, 15, 16, 17]


async def test_on_flushed_sees_the_records_before_any_future_resolves(
    start_writer: StartWriter, producer: Producer, client: redis.Redis
) -> None:
    futures: list[concurrent.futures.Future[WriteResult]] = []
    seen: list[tuple[list[int], bool]] = []

    def on_flushed(records: list[dict[str, Any]]) -> None:
        ids = [r["id"] for r in records]
        seen.append((ids, any(futures[i].done() for i in ids)))

    start_writer(on_flushed=on_flushed, coalesce_ms=60_000, max_batch=4)
    await writer_serving(client)
    futures.extend(producer.enqueue_many([record(i) for i in range(8)]))
    await gather(futures)
    assert seen == [([0, 1, 2, 3], False), ([4, 5, 6, 7], False)]


async def test_a_raising_on_flushed_hook_changes_nothing(
    start_writer: StartWriter, producer: Producer, db_uri: str, caplog: pytest.LogCaptureFixture
) -> None:
    def on_flushed(records: list[dict[str, Any]]) -> None:
        raise RuntimeError("hook broke")

    start_writer(on_flushed=on_flushed, coalesce_ms=10)
    assert await gather(producer.enqueue_many([record(i) for i in range(3)])) == [WRITTEN] * 3
    assert await gather([producer.enqueue(record(9))]) == [WRITTEN]
    assert table_ids(db_uri) == [0, 1, 2, 9]
    assert "on_flushed hook raised" in caplog.text


async def test_an_async_on_flushed_hook_is_awaited(
    start_writer: StartWriter, producer: Producer
) -> None:
    seen: list[int] = []

    async def on_flushed(records: list[dict[str, Any]]) -> None:
        await asyncio.sleep(0)
        seen.extend(r["id"] for r in records)

    start_writer(on_flushed=on_flushed, coalesce_ms=10)
    await gather(producer.enqueue_many([record(i) for i in range(3)]))
    assert seen == [0, 1, 2]


async def test_acked_entries_are_trimmed_from_the_stream(
    start_writer: StartWriter, producer: Producer, client: redis.Redis
) -> None:
    start_writer(coalesce_ms=10)
    await gather(producer.enqueue_many([record(i) for i in range(50)]))
    assert client.xlen(KEYS.stream) == 0
    assert client.xpending(KEYS.stream, "writers")["pending"] == 0


async def test_reply_lists_expire_when_nobody_reads_them(
    start_writer: StartWriter, client: redis.Redis
) -> None:
    start_writer(coalesce_ms=10, reply_ttl_ms=60_000)
    reply_key = KEYS.reply("gone")
    client.xadd(KEYS.stream, stream_entry(reply_key, 1, encode_record(record(1))))
    await async_wait_for(lambda: asyncio.to_thread(client.exists, reply_key), what="a reply")
    assert 0 < client.pttl(reply_key) <= 60_000


async def test_one_reply_message_per_producer_per_flush(
    start_writer: StartWriter, client: redis.Redis
) -> None:
    start_writer(coalesce_ms=60_000, max_batch=6)
    keys = [KEYS.reply("p1"), KEYS.reply("p2")]
    with client.pipeline() as pipe:
        for seq in range(6):
            pipe.xadd(KEYS.stream, stream_entry(keys[seq % 2], seq, encode_record(record(seq))))
        pipe.execute()
    await async_wait_for(
        lambda: asyncio.to_thread(lambda: all(client.exists(k) for k in keys)), what="replies"
    )
    for index, key in enumerate(keys):
        assert client.llen(key) == 1
        results = decode_results(client.lpop(key))
        assert [r.seq for r in results] == list(range(index, 6, 2))
        assert all(r.error is None for r in results)


async def test_status_reports_queue_writer_and_table(
    start_writer: StartWriter, producer: Producer, client: redis.Redis
) -> None:
    from lancequeue.cli.status import format_status
    from lancequeue.common.status import read_status

    start_writer(coalesce_ms=10)
    await gather(producer.enqueue_many([record(i) for i in range(20)]))
    status = read_status(client, "docs")
    assert status["writer_alive"] is True
    assert status["queue_depth"] == 0 and status["pending"] == 0
    assert status["rows_written"] == 20 and status["table_rows"] == 20
    assert status["batches"] >= 1 and status["table_version"] >= 2
    assert status["append_ms"] is not None and status["last_flush_at_ms"] is not None
    assert "mean append" in format_status(status)


async def test_with_compact_every_the_writer_compacts_small_fragments_and_keeps_every_row(
    start_writer: StartWriter, producer: Producer, db_uri: str
) -> None:
    start_writer(max_batch=2, coalesce_ms=60_000, compact_every=2)
    for first in range(0, 8, 2):  # four flushes of two records
        assert (
            await gather(producer.enqueue_many([record(first), record(first + 1)])) == [WRITTEN] * 2
        )

    # Compaction runs beside the appends: wait for it rather than for the last append (without
    # blocking the in-process writer's loop: the last flush was a full batch, so its
    # compaction may be the catch-up that follows a while without a commit).
    async def compacted() -> bool:
        return len(lancedb.connect(db_uri).open_table("docs").to_lance().get_fragments()) < 4

    await async_wait_for(compacted, 30, "the small fragments to be compacted")
    assert table_ids(db_uri) == list(range(8))


async def test_while_a_batch_is_unanswered_the_next_commits_and_the_one_after_waits(
    start_writer: StartWriter, producer: Producer, db_uri: str, client: redis.Redis
) -> None:
    """The next batch's watermark lists the unanswered batch's answers, so it may commit; the
    one after waits until they are given (the writer holds a bounded number of batches)."""
    release = asyncio.Event()
    calls: list[list[int]] = []

    async def on_flushed(records: list[dict[str, Any]]) -> None:
        calls.append([r["id"] for r in records])
        if len(calls) == 2:
            await release.wait()  # holds the second batch's answers back

    start_writer(max_batch=2, coalesce_ms=60_000, on_flushed=on_flushed)
    await writer_serving(client)
    await gather(producer.enqueue_many([record(0), record(1)]))
    held = producer.enqueue_many([record(2), record(3)])
    committed = producer.enqueue_many([record(4), record(5)])
    waiting = producer.enqueue_many([record(6), record(7)])
    await async_wait_for(  # the third batch commits while the second is unanswered...
        lambda: asyncio.to_thread(lambda: table_ids(db_uri) == [0, 1, 2, 3, 4, 5]),
        what="the third batch to be committed",
    )
    await async_wait_for(  # ...the fourth is read...
        lambda: asyncio.to_thread(lambda: pending_count(client) == 6),
        what="the fourth batch to be read",
    )
    assert calls == [[0, 1], [2, 3]]
    assert not any(future.done() for future in held + committed + waiting)
    assert await asyncio.to_thread(table_ids, db_uri) == [0, 1, 2, 3, 4, 5]  # ...and waits
    release.set()
    assert await gather(held + committed + waiting) == [WRITTEN] * 6
    assert table_ids(db_uri) == list(range(8))
