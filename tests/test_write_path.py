"""Producers → Redis stream → writer → LanceDB, with a real Redis and a real table."""

from __future__ import annotations

import asyncio
import concurrent.futures
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import lancedb
import msgpack
import pyarrow as pa
import pytest
import redis

from lancequeue.common.codec import encode_record
from lancequeue.common.errors import (
    ProducerClosed,
    QueueFull,
    RecordRejected,
    WriteFailed,
    WriteTimeout,
)
from lancequeue.common.keys import TableKeys
from lancequeue.common.protocol import decode_results, entry_fields
from lancequeue.producer import Producer
from lancequeue.writer import Writer
from tests.support import async_wait_for, record, table_ids, table_versions


def table_ids_with_nulls(db_uri: str) -> list[int | None]:
    return list(lancedb.connect(db_uri).open_table("docs").to_arrow().column("id").to_pylist())


KEYS = TableKeys("docs")
StartWriter = Callable[..., Writer]


def _entry(reply_key: str, seq: int, rec: bytes) -> dict[bytes | str, bytes | str]:
    """A stream entry exactly as a producer sends it."""
    fields = entry_fields(reply_key, seq, rec)
    return dict(zip(fields[::2], fields[1::2], strict=True))


def _flush_recorder() -> tuple[list[list[dict[str, Any]]], Callable[[list[dict[str, Any]]], None]]:
    flushes: list[list[dict[str, Any]]] = []
    return flushes, flushes.append


async def _resolve(future: concurrent.futures.Future[None], timeout: float = 30) -> None:
    await asyncio.wrap_future(future) if timeout is None else await asyncio.wait_for(
        asyncio.wrap_future(future), timeout
    )


async def _gather(futures: list[concurrent.futures.Future[None]], timeout: float = 30) -> list[Any]:
    return await asyncio.wait_for(
        asyncio.gather(*(asyncio.wrap_future(f) for f in futures), return_exceptions=True), timeout
    )


async def test_a_written_record_is_in_the_table_when_its_future_resolves(
    start_writer: StartWriter, producer: Producer, db_uri: str
) -> None:
    start_writer()
    await _resolve(producer.enqueue(record(1)))
    assert table_ids(db_uri) == [1]
    row = lancedb.connect(db_uri).open_table("docs").to_arrow().to_pylist()[0]
    assert row["text"] == "document 1"
    assert row["vector"] == pytest.approx(record(1)["vector"].tolist())


async def test_vector_columns_become_fixed_size_lists_of_float32(
    start_writer: StartWriter, producer: Producer, db_uri: str
) -> None:
    start_writer()
    await _resolve(producer.enqueue({"id": 1, "vector": [0.5, 1.5, 2.5], "text": "x"}))
    schema = lancedb.connect(db_uri).open_table("docs").schema
    assert schema.field("vector").type == pa.list_(pa.float32(), 3)


async def test_records_sent_together_flush_at_max_batch_one_append_each(
    start_writer: StartWriter, producer: Producer, db_uri: str
) -> None:
    flushes, on_flushed = _flush_recorder()
    start_writer(max_batch=10, coalesce_ms=60_000, on_flushed=on_flushed)
    await _resolve(producer.enqueue(record(0)), timeout=120) if False else None
    futures = producer.enqueue_many([record(i) for i in range(30)])
    results = await _gather(futures)
    assert results == [None] * 30
    assert [len(batch) for batch in flushes] == [10, 10, 10]
    # one table version for the creation, then exactly one per batch
    assert table_versions(db_uri) == 1 + 3
    assert table_ids(db_uri) == list(range(30))


async def test_records_arriving_within_the_window_flush_together_once_it_expires(
    start_writer: StartWriter, producer: Producer
) -> None:
    flushes, on_flushed = _flush_recorder()
    start_writer(max_batch=128, coalesce_ms=1500, on_flushed=on_flushed)
    started = time.monotonic()
    futures = [producer.enqueue(record(i)) for i in range(3)]
    await _gather(futures)
    assert [len(batch) for batch in flushes] == [3]
    assert time.monotonic() - started >= 1.5  # the window was waited out, not cut short


async def test_a_record_names_its_missing_field_and_its_batch_mates_still_land(
    start_writer: StartWriter, producer: Producer, db_uri: str
) -> None:
    flushes, on_flushed = _flush_recorder()
    schema = pa.schema(
        [
            pa.field("id", pa.int64(), nullable=False),
            pa.field("text", pa.string()),
            pa.field("vector", pa.list_(pa.float32(), 8)),
        ]
    )
    start_writer(schema=schema, coalesce_ms=60_000, max_batch=4, on_flushed=on_flushed)
    good = [record(1), record(2)]
    bad_vector = {**record(3), "vector": [1.0, 2.0]}
    no_id = {"text": "no id", "vector": record(4)["vector"]}
    results = await _gather(producer.enqueue_many([good[0], bad_vector, no_id, good[1]]))
    assert results[0] is None and results[3] is None
    assert isinstance(results[1], RecordRejected)
    assert "field 'vector': expected a vector of 8 floats, got 2" in str(results[1])
    assert isinstance(results[2], RecordRejected)
    assert "missing required field 'id'" in str(results[2])
    assert [len(batch) for batch in flushes] == [2]
    assert table_ids(db_uri) == [1, 2]


@pytest.mark.parametrize(
    "bad, reason",
    [
        ({"id": "one", "text": "x", "vector": [0.0] * 8}, "field 'id': expected int64"),
        ({"id": 1, "text": "x", "vector": [0.0] * 8, "extra": 1}, "unknown field 'extra'"),
        ({"id": 1, "text": "x", "vector": "not a vector"}, "field 'vector'"),
        ({"id": 1.5, "text": "x", "vector": [0.0] * 8}, "field 'id': expected int64"),
    ],
)
async def test_records_that_do_not_fit_the_schema_are_rejected_with_the_field(
    start_writer: StartWriter, producer: Producer, db_uri: str, bad: dict[str, Any], reason: str
) -> None:
    schema = pa.schema(
        [
            pa.field("id", pa.int64()),
            pa.field("text", pa.string()),
            pa.field("vector", pa.list_(pa.float32(), 8)),
        ]
    )
    start_writer(schema=schema, coalesce_ms=60_000, max_batch=2)
    results = await _gather(producer.enqueue_many([bad, record(7)]))
    assert isinstance(results[0], RecordRejected) and reason in str(results[0])
    assert results[1] is None
    assert table_ids(db_uri) == [7]


def test_a_value_msgpack_cannot_carry_is_rejected_by_the_producer_before_sending(
    producer: Producer, client: redis.Redis
) -> None:
    with pytest.raises(RecordRejected, match="field 'id': integer 1180591620717411303424 does not"):
        producer.enqueue({"id": 2**70})
    assert client.xlen(KEYS.stream) == 0


async def test_an_empty_record_is_answered_as_itself(
    start_writer: StartWriter, producer: Producer, db_uri: str
) -> None:
    start_writer(schema=pa.schema([pa.field("id", pa.int64())]), coalesce_ms=60_000, max_batch=3)
    results = await _gather(producer.enqueue_many([{}, {"id": "x"}, {"id": 3}]))
    assert results[0] is None  # every column is nullable: an all-null row
    assert isinstance(results[1], RecordRejected) and "field 'id'" in str(results[1])
    assert results[2] is None
    assert sorted(map(str, table_ids_with_nulls(db_uri))) == ["3", "None"]


async def test_a_failed_append_answers_every_record_of_the_batch_and_the_writer_keeps_serving(
    start_writer: StartWriter, producer: Producer, db_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = start_writer(max_batch=5, coalesce_ms=60_000)
    await _resolve(producer.enqueue_many([record(i) for i in range(5)])[0])
    # Fault injection: the storage fails for the next append only.
    from lancequeue.writer.sink import TableSink

    real_append = TableSink.append
    calls = {"n": 0}

    async def failing_once(self: TableSink, batch: pa.Table) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError("disk on fire")
        await real_append(self, batch)

    monkeypatch.setattr(TableSink, "append", failing_once)
    failed = await _gather(producer.enqueue_many([record(i) for i in range(10, 15)]))
    assert all(isinstance(r, WriteFailed) for r in failed)
    assert {(r.error_type, r.error_message) for r in failed} == {("OSError", "disk on fire")}
    ok = await _gather(producer.enqueue_many([record(i) for i in range(20, 25)]))
    assert ok == [None] * 5
    assert table_ids(db_uri) == [0, 1, 2, 3, 4, 20, 21, 22, 23, 24]
    assert writer._running


async def test_on_flushed_sees_the_records_before_any_future_resolves(
    start_writer: StartWriter, producer: Producer
) -> None:
    futures: list[concurrent.futures.Future[None]] = []
    seen: list[tuple[list[int], bool]] = []

    def on_flushed(records: list[dict[str, Any]]) -> None:
        ids = [r["id"] for r in records]
        seen.append((ids, any(futures[i].done() for i in ids)))

    start_writer(on_flushed=on_flushed, coalesce_ms=60_000, max_batch=4)
    futures.extend(producer.enqueue_many([record(i) for i in range(8)]))
    await _gather(futures)
    assert seen == [([0, 1, 2, 3], False), ([4, 5, 6, 7], False)]


async def test_a_raising_on_flushed_hook_changes_nothing(
    start_writer: StartWriter, producer: Producer, db_uri: str, caplog: pytest.LogCaptureFixture
) -> None:
    def on_flushed(records: list[dict[str, Any]]) -> None:
        raise RuntimeError("hook broke")

    start_writer(on_flushed=on_flushed, coalesce_ms=10)
    assert await _gather(producer.enqueue_many([record(i) for i in range(3)])) == [None] * 3
    assert await _gather([producer.enqueue(record(9))]) == [None]
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
    await _gather(producer.enqueue_many([record(i) for i in range(3)]))
    assert seen == [0, 1, 2]


async def test_the_table_is_created_from_a_lance_model_schema(
    start_writer: StartWriter, producer: Producer, db_uri: str
) -> None:
    from lancedb.pydantic import LanceModel, Vector

    class Doc(LanceModel):  # type: ignore[misc]
        id: int
        text: str
        vector: Vector(8)  # type: ignore[valid-type]

    start_writer(schema=Doc)
    await async_wait_for(
        lambda: asyncio.to_thread(lambda: "docs" in lancedb.connect(db_uri).list_tables().tables),
        what="table creation",
    )
    assert lancedb.connect(db_uri).open_table("docs").schema.field("vector").type == pa.list_(
        pa.float32(), 8
    )
    await _resolve(producer.enqueue(record(5)))
    assert table_ids(db_uri) == [5]


async def test_an_existing_table_is_used_as_it_is(
    start_writer: StartWriter, producer: Producer, db_uri: str
) -> None:
    db = lancedb.connect(db_uri)
    db.create_table("docs", data=[{"id": 100, "text": "old", "vector": [0.0] * 8, "score": 1.5}])
    start_writer(schema=pa.schema([pa.field("other", pa.string())]))  # ignored: table exists
    results = await _gather(producer.enqueue_many([{**record(1), "score": 2.5}, record(2)]))
    assert results == [None, None]  # 'score' is nullable in the existing table
    assert table_ids(db_uri) == [1, 2, 100]


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
    made = Producer("docs", redis_url=redis_url)
    with pytest.raises(WriteTimeout):
        await asyncio.to_thread(made.write, record(1), 0.3)
    future = made.enqueue(record(2))
    await asyncio.to_thread(made.close, 0.1)
    assert isinstance(future.exception(), ProducerClosed)


async def test_write_raises_the_record_s_own_error(
    start_writer: StartWriter, producer: Producer
) -> None:
    start_writer(schema=pa.schema([pa.field("id", pa.int64())]), coalesce_ms=10)
    with pytest.raises(RecordRejected, match="unknown field 'text'"):
        await asyncio.to_thread(producer.write, {"id": 1, "text": "x"}, 30)
    await asyncio.to_thread(producer.write_many, [{"id": 2}, {"id": 3}], 30)


async def test_acked_entries_are_trimmed_from_the_stream(
    start_writer: StartWriter, producer: Producer, client: redis.Redis
) -> None:
    start_writer(coalesce_ms=10)
    await _gather(producer.enqueue_many([record(i) for i in range(50)]))
    assert client.xlen(KEYS.stream) == 0
    assert client.xpending(KEYS.stream, "writers")["pending"] == 0


async def test_an_entry_naming_a_foreign_reply_key_is_acked_never_answered(
    start_writer: StartWriter, producer: Producer, client: redis.Redis, db_uri: str
) -> None:
    start_writer(coalesce_ms=10)
    client.set("session:42", "precious")
    client.xadd(KEYS.stream, _entry("session:42", 1, encode_record(record(99))))
    client.xadd(KEYS.stream, {"v": "1", "seq": "1", "rec": encode_record(record(98))})
    await _resolve(producer.enqueue(record(1)))
    assert client.get("session:42") == b"precious"
    assert client.type("session:42") == b"string"
    assert client.xlen(KEYS.stream) == 0
    assert table_ids(db_uri) == [1]


async def test_undecodable_msgpack_is_rejected_alone(
    start_writer: StartWriter, client: redis.Redis, db_uri: str
) -> None:
    start_writer(coalesce_ms=200)
    reply_key = KEYS.reply("handmade")
    good = _entry(reply_key, 1, encode_record(record(1)))
    bad = _entry(reply_key, 2, b"\xc1\xc1")
    with client.pipeline() as pipe:
        pipe.xadd(KEYS.stream, good)
        pipe.xadd(KEYS.stream, bad)
        pipe.execute()
    popped = await asyncio.to_thread(client.blpop, [reply_key], 30)
    assert popped is not None
    results = {r.seq: r.error for r in decode_results(popped[1])}
    assert results[1] is None
    assert isinstance(results[2], RecordRejected) and "undecodable" in str(results[2])
    assert client.pttl(reply_key) > 0 or client.exists(reply_key) == 0
    assert table_ids(db_uri) == [1]


async def test_reply_lists_expire_when_nobody_reads_them(
    start_writer: StartWriter, client: redis.Redis
) -> None:
    start_writer(coalesce_ms=10, reply_ttl_ms=60_000)
    reply_key = KEYS.reply("gone")
    client.xadd(KEYS.stream, _entry(reply_key, 1, encode_record(record(1))))
    await async_wait_for(lambda: asyncio.to_thread(client.exists, reply_key), what="a reply")
    assert 0 < client.pttl(reply_key) <= 60_000


async def test_one_reply_message_per_producer_per_flush(
    start_writer: StartWriter, client: redis.Redis
) -> None:
    start_writer(coalesce_ms=60_000, max_batch=6)
    keys = [KEYS.reply("p1"), KEYS.reply("p2")]
    with client.pipeline() as pipe:
        for seq in range(6):
            pipe.xadd(KEYS.stream, _entry(keys[seq % 2], seq, encode_record(record(seq))))
        pipe.execute()
    await async_wait_for(
        lambda: asyncio.to_thread(lambda: all(client.exists(k) for k in keys)), what="replies"
    )
    for index, key in enumerate(keys):
        assert client.llen(key) == 1
        results = decode_results(client.lpop(key))
        assert [r.seq for r in results] == list(range(index, 6, 2))
        assert all(r.error is None for r in results)


async def test_back_pressure_blocks_enqueue_until_a_flush_makes_room(
    start_writer: StartWriter, redis_url: str, client: redis.Redis, db_uri: str
) -> None:
    writer = start_writer(max_queue_size=4, max_batch=4)
    await async_wait_for(
        lambda: asyncio.to_thread(client.hget, KEYS.config, "max_queue_size"),
        what="the writer's published max_queue_size",
    )
    await writer.stop()
    made = Producer("docs", redis_url=redis_url)
    try:
        first = made.enqueue_many([record(i) for i in range(4)])
        blocked = threading.Event()
        done: list[Any] = []

        def enqueue_fifth() -> None:
            blocked.set()
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
        assert not done and client.xlen(KEYS.stream) == 4
        start_writer(max_queue_size=4, max_batch=4)
        await asyncio.to_thread(thread.join, 60)
        assert len(done) == 1
        await _gather([*first, done[0]])
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
        assert client.xlen(KEYS.stream) == 3
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
        assert client.xlen(KEYS.stream) == DEFAULT_MAX_QUEUE_SIZE == 4096
        made.close(timeout=0)


async def test_status_reports_queue_writer_and_table(
    start_writer: StartWriter, producer: Producer, client: redis.Redis
) -> None:
    from lancequeue.common.status import read_status

    start_writer(coalesce_ms=10)
    await _gather(producer.enqueue_many([record(i) for i in range(20)]))
    status = read_status(client, "docs")
    assert status["writer_alive"] is True
    assert status["queue_depth"] == 0 and status["pending"] == 0
    assert status["rows_written"] == 20 and status["table_rows"] == 20
    assert status["batches"] >= 1 and status["table_version"] >= 2
    assert status["last_flush_at_ms"] is not None


async def test_raw_msgpack_ext_payload_round_trips_a_numpy_vector_into_the_table(
    start_writer: StartWriter, client: redis.Redis, db_uri: str
) -> None:
    """A producer in another language: hand-built entry, raw little-endian float32 bytes."""
    start_writer(coalesce_ms=10)
    import struct

    vector = struct.pack("<4f", 0.25, 0.5, 0.75, 1.0)
    ext = msgpack.ExtType(2, msgpack.packb(["<f4", [4], vector], use_bin_type=True))
    rec = msgpack.packb({"id": 1, "vector": ext}, use_bin_type=True)
    reply_key = KEYS.reply("other-language")
    client.xadd(KEYS.stream, {"v": "1", "reply": reply_key, "seq": "1", "rec": rec})
    popped = await asyncio.to_thread(client.blpop, [reply_key], 30)
    assert popped is not None and decode_results(popped[1])[0].error is None
    rows = lancedb.connect(db_uri).open_table("docs").to_arrow().to_pylist()
    assert rows == [{"id": 1, "vector": [0.25, 0.5, 0.75, 1.0]}]


async def test_the_protocol_document_s_hand_built_producer_works(
    start_writer: StartWriter, redis_url: str, db_uri: str
) -> None:
    """PROTOCOL.md's example producer, run as written (only the Redis address changed)."""
    from pathlib import Path

    text = (Path(__file__).parent.parent / "PROTOCOL.md").read_text()
    code = text.split("```python\n")[-1].split("```")[0]
    code = code.replace("redis.Redis()", f"redis.Redis.from_url({redis_url!r})")
    start_writer(coalesce_ms=10)
    printed: list[object] = []
    await asyncio.to_thread(exec, code, {"print": printed.append})
    assert printed == [[[1, None]]]
    assert table_ids(db_uri) == [1]


async def test_a_second_writer_waits_while_the_first_is_alive_then_takes_over(
    start_writer: StartWriter,
    producer: Producer,
    client: redis.Redis,
    db_uri: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    first = start_writer(coalesce_ms=10, heartbeat_ms=100)
    await _resolve(producer.enqueue(record(1)))
    second = start_writer(coalesce_ms=10, heartbeat_ms=100)
    await async_wait_for(
        lambda: asyncio.to_thread(lambda: "waiting until it stops" in caplog.text),
        what="the second writer to wait",
    )
    await _resolve(producer.enqueue(record(2)))
    assert client.hget(KEYS.writer, "consumer") == first.consumer.encode()
    await first.stop()
    await _resolve(producer.enqueue(record(3)))
    assert client.hget(KEYS.writer, "consumer") == second.consumer.encode()
    assert table_ids(db_uri) == [1, 2, 3]


async def test_a_writer_that_lost_its_heartbeat_to_another_stops(
    redis_url: str, db_uri: str, client: redis.Redis
) -> None:
    writer = Writer(table="docs", redis_url=redis_url, db_uri=db_uri, heartbeat_ms=100)
    task = asyncio.create_task(writer.run())
    await async_wait_for(
        lambda: asyncio.to_thread(client.get, KEYS.heartbeat), what="the heartbeat"
    )
    client.set(KEYS.heartbeat, "another-writer", px=10_000)
    await asyncio.wait_for(task, 30)  # run() returned by itself
    assert client.get(KEYS.heartbeat) == b"another-writer"  # not deleted by the loser


async def test_many_threads_share_one_producer_and_every_record_lands_once(
    start_writer: StartWriter, producer: Producer, db_uri: str
) -> None:
    start_writer(coalesce_ms=20)

    def write_range(start: int) -> None:
        for i in range(start, start + 25):
            producer.write(record(i), timeout=60)

    await asyncio.gather(*(asyncio.to_thread(write_range, k * 100) for k in range(8)))
    assert table_ids(db_uri) == sorted(k * 100 + i for k in range(8) for i in range(25))


def test_an_unreachable_redis_is_a_redis_unavailable_error_and_leaves_nothing_pending(
    redis_server: str,
) -> None:
    from lancequeue.common.errors import RedisUnavailable

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead_port = sock.getsockname()[1]
    made = Producer("docs", redis_url=f"redis://127.0.0.1:{dead_port}")
    with pytest.raises(RedisUnavailable) as caught:
        made.enqueue(record(1))
    assert isinstance(caught.value, ConnectionError) and caught.value.retriable
    assert made.outstanding == 0  # nothing left waiting for an answer that cannot come
    made.close()
