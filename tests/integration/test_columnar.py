"""Columnar entries: many records column by column in one stream entry, each record still
answered, checked and written exactly once on its own, and built into Arrow per column."""

from __future__ import annotations

import asyncio
import enum
import hashlib
import os
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import lancedb
import msgpack
import numpy as np
import pyarrow as pa
import pytest
import redis

from lancequeue.common.codec import encode_record
from lancequeue.common.columns import decode_columns, encode_columns, encode_fields
from lancequeue.common.entries import columnar_entry_fields
from lancequeue.common.errors import RecordRejected
from lancequeue.common.replies import Result, record_digest
from lancequeue.writer.acknowledger import DeadLetter, _dead_letter_fields
from lancequeue.writer.arrow_batch import BatchBuilder
from lancequeue.writer.entries import read_entries
from tests.support import KEYS, StartWriter, as_entry, pop_answers, record, table_ids

REPLY = KEYS.reply("p1")


class StrEnumName(str, enum.Enum):
    """A field name that is a ``str`` subclass, as ``encode_record`` takes it."""

    ID = "id"


def rows(count: int, start: int = 0) -> list[dict[str, Any]]:
    return [record(i) for i in range(start, start + count)]


def send_columnar(client: redis.Redis, first_seq: int, count: int, body: bytes) -> None:
    """One columnar entry, exactly as PROTOCOL.md describes it."""
    fields = columnar_entry_fields(REPLY, first_seq, count, body, 600_000)
    client.xadd(KEYS.stream, dict(zip(fields[::2], fields[1::2], strict=True)))  # type: ignore[arg-type]


def answers(client: redis.Redis, count: int) -> dict[int, Result]:
    return pop_answers(client, REPLY, count, 60.0)


def test_vectors_of_one_shape_travel_as_one_array_and_every_record_comes_back_as_sent() -> None:
    records = rows(4)
    records[1]["note"] = None
    records[2]["extra"] = [1, {"at": datetime(2020, 1, 2, 3, 4, 5, 6, tzinfo=UTC)}]
    body = encode_columns([encode_fields(r) for r in records])
    columns, problems = decode_columns(body, 4)
    assert problems == {}
    assert isinstance(columns["vector"], np.ndarray) and columns["vector"].shape == (4, 8)
    assert columns["id"] == [0, 1, 2, 3]
    assert columns["extra"][2] == records[2]["extra"] and columns["extra"][0] is None
    for position, sent in enumerate(records):
        assert np.array_equal(columns["vector"][position], sent["vector"])


@pytest.mark.parametrize(
    "value",
    [
        None,
        7,
        -(2**63),
        1.5,
        "text",
        b"bytes",
        [1, [2.5, None]],
        {"a": {"b": 1}},
        datetime(2020, 1, 2, 3, 4, 5, 6),
        datetime(2020, 1, 2, tzinfo=UTC),
        np.arange(6, dtype=np.int16).reshape(2, 3),
        np.zeros(0, dtype=np.float64),
        np.array([True, False]),
        np.float32(2.5),
        (1, 2),
    ],
)
def test_a_record_encoded_field_by_field_is_byte_for_byte_the_record_encoded_whole(
    value: Any,
) -> None:
    whole = {"id": 1, "value": value, "vector": np.ones(4, dtype=np.float32)}
    assert encode_fields(whole).encoded() == encode_record(whole)
    assert encode_fields(whole).size == len(encode_record(whole))


@pytest.mark.parametrize(
    ("record", "named"),
    [({"id": 1, "bad": object()}, "field 'bad'"), ({1: "x"}, "field names must be str")],
)
def test_a_field_that_cannot_be_encoded_is_named(record: Any, named: str) -> None:
    with pytest.raises(RecordRejected, match=named):
        encode_fields(record)


def test_records_with_different_fields_share_one_body_with_nil_where_one_has_none() -> None:
    records = [{"id": 1, "a": "x"}, {"b": np.ones(2, np.float32), "id": 2}, {"id": 3}]
    columns, problems = decode_columns(encode_columns([encode_fields(r) for r in records]), 3)
    assert problems == {}
    assert columns["id"] == [1, 2, 3] and columns["a"] == ["x", None, None]
    assert columns["b"][0] is None and list(columns["b"][1]) == [1.0, 1.0]


def test_a_column_of_vectors_of_different_shapes_goes_value_by_value() -> None:
    records = rows(3)
    records[1]["vector"] = records[1]["vector"][:4]
    columns, _ = decode_columns(encode_columns([encode_fields(r) for r in records]), 3)
    assert isinstance(columns["vector"], list)
    assert [len(vector) for vector in columns["vector"]] == [8, 4, 8]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\xc1", "undecodable 'cols'"),
        (msgpack.packb([1, 2]), "must be a msgpack map"),
        (msgpack.packb({"id": [1, 2]}), "holds 2 values for 3 records"),
        (msgpack.packb({"id": 7}), "must be an array of values"),
        (msgpack.packb({1: [1, 2, 3]}), "column names must be strings"),
    ],
)
def test_a_columnar_body_that_cannot_be_read_rejects_every_record_of_its_entry(
    body: bytes, reason: str
) -> None:
    fields = columnar_entry_fields(REPLY, 5, 3, body, 600_000)
    entry = as_entry(fields)
    parts = read_entries(KEYS, b"1-0", entry)
    assert [part.seq for part in parts] == [5, 6, 7]
    assert all(part.rejection is not None and reason in part.rejection for part in parts)


def test_a_value_decode_record_would_refuse_rejects_its_record_alone() -> None:
    nanos = msgpack.Timestamp(0, 1)  # nanoseconds: nothing is truncated
    body = msgpack.packb({"id": [1, 2], "at": [None, nanos]}, datetime=False)
    _, problems = decode_columns(body, 2)
    assert list(problems) == [1] and "nanoseconds" in problems[1]


def built_by_columns(builder: BatchBuilder, records: list[dict[str, Any]]) -> tuple[Any, Any]:
    body = encode_columns([encode_fields(r) for r in records])
    fields = columnar_entry_fields(REPLY, 0, len(records), body, 600_000)
    entry = as_entry(fields)
    return builder.build_rows(read_entries(KEYS, b"1-0", entry))


SCHEMA = pa.schema(
    [
        pa.field("id", pa.int64(), nullable=False),
        pa.field("text", pa.string()),
        pa.field("vector", pa.list_(pa.float32(), 8)),
    ]
)


@pytest.mark.parametrize(
    "change",
    [
        lambda r: None,  # all fit: built column by column
        lambda r: r[2].update(vector=np.full(8, np.nan, np.float32)),
        lambda r: r[1].update(id=1.5),
        lambda r: r[3].update(unknown="x"),
        lambda r: r[0].pop("id"),
        lambda r: r[2].update(text=None, vector=[0.5] * 8),
        lambda r: r[1].update(id=True),
    ],
)
def test_building_by_columns_gives_what_building_record_by_record_gives(change: Any) -> None:
    builder = BatchBuilder(SCHEMA)
    records = rows(5)
    change(records)
    by_columns, rejected_by_columns = built_by_columns(builder, records)
    by_records, rejected_by_records = builder.build([dict(r) for r in records])
    assert rejected_by_columns == rejected_by_records
    assert by_columns.equals(by_records)


async def test_a_columnar_entry_lands_each_record_and_rejects_those_that_do_not_fit(
    start_writer: StartWriter, client: redis.Redis, db_uri: str
) -> None:
    start_writer(coalesce_ms=20)
    send_columnar(client, 1, 1, encode_columns([encode_fields(record(1))]))  # creates the table
    assert (await asyncio.to_thread(answers, client, 1))[1].error is None
    records = rows(4, start=10)
    records[1]["vector"] = np.full(8, np.nan, np.float32)
    records[2]["id"] = "twelve"
    body = encode_columns([encode_fields(r) for r in records])
    send_columnar(client, 10, 4, body)
    results = await asyncio.to_thread(answers, client, 4)
    assert results[10].error is None and results[13].error is None
    assert results[10].digest == results[13].digest == record_digest(body)
    assert isinstance(results[11].error, RecordRejected) and "NaN" in str(results[11].error)
    assert isinstance(results[12].error, RecordRejected) and "'id'" in str(results[12].error)
    assert table_ids(db_uri) == [1, 10, 13]


async def test_a_columnar_entry_that_cannot_be_read_is_answered_for_each_record(
    start_writer: StartWriter, client: redis.Redis, db_uri: str
) -> None:
    start_writer(coalesce_ms=20)
    send_columnar(client, 5, 3, msgpack.packb({"id": [1, 2]}))
    results = await asyncio.to_thread(answers, client, 3)
    assert sorted(results) == [5, 6, 7]
    assert all(isinstance(result.error, RecordRejected) for result in results.values())
    assert "holds 2 values for 3 records" in str(results[6].error)


async def test_each_version_is_answered_in_its_form_with_its_digest(
    start_writer: StartWriter, client: redis.Redis, db_uri: str
) -> None:
    """Version 1: one item per record; 2: ranges; 3: ranges whose digest is SHA-256's; 5: ranges
    whose digest is the entry's nonce. A writer says which versions it reads by publishing
    ``protocol``; a version it does not speak, or an entry of version 5 without a nonce of 8
    bytes, is refused by name, and nothing of it is written."""
    start_writer(coalesce_ms=20)
    nonce = os.urandom(8)
    for version, first in ((b"1", 1), (b"2", 101), (b"3", 201), (b"5", 301)):
        body = encode_columns([encode_fields(r) for r in rows(3, start=first)])
        fields = columnar_entry_fields(REPLY, first, 3, body, 600_000, version)
        if version == b"5":
            fields += [b"nonce", nonce]
        client.xadd(KEYS.stream, dict(zip(fields[::2], fields[1::2], strict=True)))  # type: ignore[arg-type]
        popped = await asyncio.to_thread(client.blpop, [REPLY], 60)
        assert popped is not None
        message = msgpack.unpackb(popped[1])
        digest = nonce if version == b"5" else record_digest(body, version)
        if version == b"1":
            assert message == [[seq, None, digest] for seq in range(first, first + 3)]
        else:
            # with the table version the commit made
            version_made = lancedb.connect(db_uri).open_table("docs").version
            expected = {"ok": [[first, first + 2, digest]], "errors": [], "version": version_made}
            assert message == expected
    assert record_digest(body, b"3") == hashlib.sha256(body).digest()[:8] != record_digest(body)
    assert client.hget(KEYS.config, "protocol") == b"5"
    refused = {
        (b"6", None): "unsupported protocol version b'6' (this writer speaks 1, 2, 3, 4, 5)",
        (b"5", None): "an entry of version 5 needs a 'nonce' of 8 bytes, not None",
        (b"5", b"short"): "an entry of version 5 needs a 'nonce' of 8 bytes, not b'short'",
    }
    for seq, ((version, sent_nonce), why) in enumerate(refused.items(), 401):
        body = encode_columns([encode_fields(r) for r in rows(1, start=seq)])
        fields = columnar_entry_fields(REPLY, seq, 1, body, 600_000, version)
        if sent_nonce is not None:
            fields += [b"nonce", sent_nonce]
        client.xadd(KEYS.stream, dict(zip(fields[::2], fields[1::2], strict=True)))  # type: ignore[arg-type]
        popped = await asyncio.to_thread(client.blpop, [REPLY], 60)
        assert popped is not None
        message = msgpack.unpackb(popped[1])
        error = message["errors"][0][1] if version == b"5" else message[0][1]
        assert error["error"] == "RecordRejected"
        assert why in error["message"]
    assert table_ids(db_uri) == [1, 2, 3, 101, 102, 103, 201, 202, 203, 301, 302, 303]


@pytest.mark.parametrize(
    ("bad", "named"),
    [
        ({"meta": {1: "x"}}, "map keys must be strings"),
        ({"vector": np.zeros(8, dtype=np.longdouble)}, "unsupported array dtype"),
    ],
)
def test_a_value_the_writer_cannot_read_rejects_its_record_alone_not_its_entry_mates(
    bad: dict[str, Any], named: str
) -> None:
    records = rows(4)
    records[2].update(bad)
    body = encode_columns([encode_fields(r) for r in records])
    fields = columnar_entry_fields(REPLY, 0, 4, body, 600_000)
    entry = as_entry(fields)
    parts = read_entries(KEYS, b"1-0", entry)
    assert [part.rejection is None for part in parts] == [True, True, False, True]
    assert named in (parts[2].rejection or "")


def test_a_field_name_that_cannot_be_encoded_is_a_rejection_not_a_crash() -> None:
    with pytest.raises(RecordRejected, match="field"):
        encode_fields({"\udc80": 1})
    assert encode_fields({StrEnumName.ID: 1}).encoded() == encode_record({"id": 1})


class _ListKeyed(Mapping[Any, Any]):
    """A mapping whose key is a list (unhashable): a hostile or careless caller's."""

    def __getitem__(self, key: Any) -> Any:
        return 1

    def __iter__(self) -> Iterator[Any]:
        return iter([["id"]])

    def __len__(self) -> int:
        return 1


def test_a_mapping_with_an_unhashable_key_is_refused_by_name() -> None:
    with pytest.raises(RecordRejected, match=r"field names must be str, got \['id'\]"):
        encode_fields(_ListKeyed())


def test_each_record_of_a_columnar_entry_is_dead_lettered_as_its_own_number_and_record() -> None:
    records = rows(3, start=40)
    records[1]["meta"] = {1: "x"}  # unreadable: rejected as it is read
    body = encode_columns([encode_fields(r) for r in records])
    fields = columnar_entry_fields(REPLY, 40, 3, body, 600_000)
    entry = as_entry(fields)
    for part, sent in zip(read_entries(KEYS, b"1-0", entry), records, strict=True):
        flat = _dead_letter_fields(DeadLetter(part, 3, "kept killing"))
        dead = dict(zip(flat[::2], flat[1::2], strict=True))
        assert dead[b"seq"] == str(sent["id"])
        if part.rejection is None:
            assert dead[b"rec"] == encode_record(sent)
