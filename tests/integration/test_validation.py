"""Bad input: each bad record is rejected alone, naming what was wrong; the rest lands."""

from __future__ import annotations

import asyncio
from datetime import date, datetime
from typing import Any

import lancedb
import msgpack
import numpy as np
import pyarrow as pa
import pytest
import redis

from lancequeue.common.codec import encode_record
from lancequeue.common.errors import (
    RecordRejected,
)
from lancequeue.common.replies import decode_results, record_digest
from lancequeue.producer import Producer
from tests.support import (
    KEYS,
    WRITTEN,
    StartWriter,
    async_wait_for,
    flush_recorder,
    gather,
    record,
    resolve,
    stream_entry,
    table_ids,
    table_ids_with_nulls,
)


async def test_a_record_names_its_missing_field_and_its_batch_mates_still_land(
    start_writer: StartWriter, producer: Producer, db_uri: str
) -> None:
    flushes, on_flushed = flush_recorder()
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
    results = await gather(producer.enqueue_many([good[0], bad_vector, no_id, good[1]]))
    assert results[0] == WRITTEN and results[3] == WRITTEN
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
    results = await gather(producer.enqueue_many([bad, record(7)]))
    assert isinstance(results[0], RecordRejected) and reason in str(results[0])
    assert results[1] == WRITTEN
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
    results = await gather(producer.enqueue_many([{}, {"id": "x"}, {"id": 3}]))
    assert results[0] == WRITTEN  # every column is nullable: an all-null row
    assert isinstance(results[1], RecordRejected) and "field 'id'" in str(results[1])
    assert results[2] == WRITTEN
    assert sorted(map(str, table_ids_with_nulls(db_uri))) == ["3", "None"]


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
    await resolve(producer.enqueue(record(5)))
    assert table_ids(db_uri) == [5]


async def test_an_existing_table_is_used_as_it_is(
    start_writer: StartWriter, producer: Producer, db_uri: str
) -> None:
    db = lancedb.connect(db_uri)
    db.create_table("docs", data=[{"id": 100, "text": "old", "vector": [0.0] * 8, "score": 1.5}])
    start_writer(schema=pa.schema([pa.field("other", pa.string())]))  # ignored: table exists
    results = await gather(producer.enqueue_many([{**record(1), "score": 2.5}, record(2)]))
    assert results == [WRITTEN] * 2  # 'score' is nullable in the existing table
    assert table_ids(db_uri) == [1, 2, 100]


async def test_an_entry_naming_a_foreign_reply_key_is_acked_never_answered(
    start_writer: StartWriter, producer: Producer, client: redis.Redis, db_uri: str
) -> None:
    start_writer(coalesce_ms=10)
    client.set("session:42", "precious")
    client.xadd(KEYS.stream, stream_entry("session:42", 1, encode_record(record(99))))
    client.xadd(KEYS.stream, {"v": "1", "seq": "1", "rec": encode_record(record(98))})
    await resolve(producer.enqueue(record(1)))
    assert client.get("session:42") == b"precious"
    assert client.type("session:42") == b"string"
    assert client.xlen(KEYS.stream) == 0
    assert table_ids(db_uri) == [1]


async def test_undecodable_msgpack_is_rejected_alone(
    start_writer: StartWriter, client: redis.Redis, db_uri: str
) -> None:
    start_writer(coalesce_ms=200)
    reply_key = KEYS.reply("handmade")
    good = stream_entry(reply_key, 1, encode_record(record(1)))
    bad = stream_entry(reply_key, 2, b"\xc1\xc1")
    with client.pipeline() as pipe:
        pipe.xadd(KEYS.stream, good)
        pipe.xadd(KEYS.stream, bad)
        pipe.execute()
    popped = await asyncio.to_thread(client.blpop, [reply_key], 30)
    assert popped is not None
    results = {r.seq: r.error for r in decode_results(popped[1])}
    assert results[1] is None
    assert isinstance(results[2], RecordRejected) and "undecodable" in str(results[2])
    assert table_ids(db_uri) == [1]


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

    text = (Path(__file__).parents[2] / "PROTOCOL.md").read_text()
    code = text.split("```python\n")[-1].split("```")[0]
    code = code.replace("redis.Redis()", f"redis.Redis.from_url({redis_url!r})")
    start_writer(coalesce_ms=10)
    printed: list[object] = []
    namespace: dict[str, object] = {"print": printed.append}
    await asyncio.to_thread(exec, code, namespace)
    rec = namespace["rec"]
    assert isinstance(rec, bytes)
    assert printed == [[[1, None, record_digest(rec)]]]  # ok, with the digest of what it sent
    assert table_ids(db_uri) == [1]


async def test_write_raises_the_record_s_own_error(
    start_writer: StartWriter, producer: Producer
) -> None:
    start_writer(schema=pa.schema([pa.field("id", pa.int64())]), coalesce_ms=10)
    with pytest.raises(RecordRejected, match="unknown field 'text'"):
        await asyncio.to_thread(producer.write, {"id": 1, "text": "x"}, 30)
    await asyncio.to_thread(producer.write_many, [{"id": 2}, {"id": 3}], 30)


@pytest.mark.parametrize(
    "column_type, value, reason",
    [
        (pa.float32(), 1e300, "out of range for float"),
        (pa.float64(), True, "expected double, got bool"),
        (pa.int32(), 2.0, "expected int32, got float"),
        (pa.list_(pa.int64()), [1, 2.9], "item 1: expected int64, got float"),
        (pa.struct([("a", pa.int32())]), {"a": 1.5}, "a: expected int32, got float"),
        (pa.struct([("a", pa.int32())]), {"a": 1, "zzz": 2}, "unknown field 'zzz'"),
        (pa.map_(pa.string(), pa.int64()), {"k": 2.5}, "'k': expected int64, got float"),
        (pa.date32(), datetime(2026, 1, 2, 3, 4), "expected date32[day], got datetime"),
        (pa.timestamp("s"), datetime(2026, 1, 2, 3, 4, 5, 600), "would drop"),
        (pa.timestamp("us"), 5, "expected timestamp[us], got int"),
        (pa.string(), 5, "expected string, got int"),
        (pa.list_(pa.float32(), 3), [1e300, 0.0, 0.0], "out of range"),
    ],
)
async def test_values_arrow_would_convert_with_loss_are_rejected(
    start_writer: StartWriter,
    producer: Producer,
    db_uri: str,
    column_type: pa.DataType,
    value: Any,
    reason: str,
) -> None:
    schema = pa.schema([pa.field("id", pa.int64()), pa.field("x", column_type)])
    start_writer(schema=schema, coalesce_ms=60_000, max_batch=2)
    results = await gather(producer.enqueue_many([{"id": 1, "x": value}, {"id": 2}]))
    assert isinstance(results[0], RecordRejected), results[0]
    assert "field 'x'" in str(results[0]) and reason in str(results[0])
    assert results[1] == WRITTEN
    assert table_ids(db_uri) == [2]


async def test_values_that_fit_exactly_are_accepted(
    start_writer: StartWriter, producer: Producer, db_uri: str
) -> None:
    schema = pa.schema(
        [
            pa.field("id", pa.int64()),
            pa.field("f", pa.float32()),
            pa.field("tags", pa.list_(pa.string())),
            pa.field("meta", pa.struct([("a", pa.int32()), ("b", pa.string())])),
            pa.field("day", pa.date32()),
            pa.field("at", pa.timestamp("us")),
        ]
    )
    start_writer(schema=schema, coalesce_ms=10)
    row = {
        "id": 1,
        "f": 3,  # an int for a float column: exact
        "tags": ["a", "b"],
        "meta": {"a": 1},
        "day": date(2026, 11, 28),
        "at": datetime(2026, 11, 28, 1, 2, 3, 456789),
    }
    await asyncio.to_thread(producer.write, row, 30)
    stored = lancedb.connect(db_uri).open_table("docs").to_arrow().to_pylist()[0]
    assert stored == {**row, "f": 3.0, "meta": {"a": 1, "b": None}}


async def test_the_first_batch_defines_the_table_with_sensible_types(
    start_writer: StartWriter, producer: Producer, db_uri: str
) -> None:
    start_writer(coalesce_ms=60_000, max_batch=3)
    records = [
        {"id": 1, "score": 1, "vector": [0.5, 0, 1], "note": None, "tags": []},
        {"id": 2, "score": 0.5, "vector": [1.0, 2.0, 3.0], "note": None, "tags": []},
        {"id": 3, "score": 2, "vector": np.ones(3, dtype=np.float64), "note": None},
    ]
    assert await gather(producer.enqueue_many(records)) == [WRITTEN] * 3
    schema = lancedb.connect(db_uri).open_table("docs").schema
    assert schema.field("vector").type == pa.list_(pa.float32(), 3)
    assert schema.field("score").type == pa.float64()  # ints and floats together
    assert schema.names == ["id", "score", "vector"]  # no value in the batch: left out


async def test_a_first_batch_with_no_values_creates_no_table(
    start_writer: StartWriter, producer: Producer, db_uri: str
) -> None:
    start_writer(coalesce_ms=300, max_batch=2)
    results = await gather(producer.enqueue_many([{}, {"note": None}]))
    assert all(isinstance(r, RecordRejected) for r in results)
    assert "give the writer a schema" in str(results[0])
    assert "docs" not in lancedb.connect(db_uri).list_tables().tables
    assert await gather([producer.enqueue(record(1))]) == [WRITTEN]  # the next batch defines it
    assert table_ids(db_uri) == [1]


async def test_byte_string_field_names_are_rejected_alone(
    start_writer: StartWriter, client: redis.Redis, db_uri: str
) -> None:
    start_writer(coalesce_ms=200, max_batch=2)
    reply_key = KEYS.reply("bytes-keys")
    with client.pipeline() as pipe:
        pipe.xadd(KEYS.stream, stream_entry(reply_key, 1, msgpack.packb({b"id": 1, "id": 2})))
        pipe.xadd(KEYS.stream, stream_entry(reply_key, 2, msgpack.packb({"id": 3})))
        pipe.execute()
    popped = await asyncio.to_thread(client.blpop, [reply_key], 30)
    assert popped is not None
    results = {r.seq: r.error for r in decode_results(popped[1])}
    assert isinstance(results[1], RecordRejected) and "field names must be strings" in str(
        results[1]
    )
    assert results[2] is None
    assert table_ids(db_uri) == [3]


async def test_a_reply_key_someone_made_a_string_costs_only_its_own_answers(
    start_writer: StartWriter, producer: Producer, client: redis.Redis, db_uri: str
) -> None:
    start_writer(coalesce_ms=200, max_batch=2)
    squatted = KEYS.reply("squatted")
    client.set(squatted, "not a list")
    futures = producer.enqueue_many([record(1)])
    client.xadd(KEYS.stream, stream_entry(squatted, 1, encode_record(record(2))))
    assert await gather(futures) == [WRITTEN]  # the batch was acked and the others answered
    assert client.get(squatted) == b"not a list"
    assert await gather([producer.enqueue(record(3))]) == [WRITTEN]  # the writer kept serving
    assert table_ids(db_uri) == [1, 2, 3]


@pytest.mark.parametrize(
    "fields",
    [
        {"reply": KEYS.reply("x"), "seq": "1", "rec": b"\x80"},  # no version
        {"v": "1", "reply": KEYS.reply("x"), "seq": "99999999999999999999", "rec": b"\x80"},
        {"v": "1", "reply": b"\xff\xfe", "seq": "1", "rec": b"\x80"},
        {"v": "1", "reply": KEYS.reply("x"), "seq": "-1", "rec": b"\x80"},
        {"junk": "only"},
    ],
)
async def test_hostile_entries_never_stop_the_writer(
    start_writer: StartWriter,
    producer: Producer,
    client: redis.Redis,
    db_uri: str,
    fields: dict[str, Any],
) -> None:
    start_writer(coalesce_ms=20)
    client.xadd(KEYS.stream, fields)
    assert await gather([producer.enqueue(record(1))]) == [WRITTEN]
    assert client.xlen(KEYS.stream) == 0
    assert table_ids(db_uri) == [1]
