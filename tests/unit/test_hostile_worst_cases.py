"""Hostile input, the worst cases one by one: each input a property of ``test_hostile_input.py``
found breaking the writer's decode and validate path, at its smallest."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import lancedb
import pytest

from lancequeue.common.codec import encode_record, packb
from lancequeue.writer.arrow_batch import BatchBuilder
from lancequeue.writer.entries import read_entry
from lancequeue.writer.schema_inference import infer_schema
from tests.support import KEYS
from tests.unit.hostile import (  # noqa: F401 - quiet_writer_logs is a fixture
    REPLY_KEY,
    SCHEMA,
    Ext,
    Raw,
    build_and_account,
    entry_of,
    fields_of,
    nested_lists,
    pack,
    quiet_writer_logs,
)

pytestmark = [
    pytest.mark.timeout(60),  # a hang fails fast instead of at the suite's 120 s
    pytest.mark.usefixtures("quiet_writer_logs"),
]


# --- the worst cases, one by one ----------------------------------------------------------------


def test_ten_thousand_nested_lists_are_rejected_alone_and_their_batch_mates_land() -> None:
    bad = entry_of(pack({"id": 1, "text": Raw(nested_lists(10_000))}))
    assert bad.record is None and bad.rejection and "undecodable" in bad.rejection
    good = [entry_of(encode_record({"id": i, "text": "fine"})) for i in (2, 3)]
    table, rejected = BatchBuilder(SCHEMA).build([e.record for e in good if e.record])
    assert rejected == {} and table is not None and table.column("id").to_pylist() == [2, 3]


def test_a_50_mb_string_is_decoded_whole_and_lands_beside_its_batch_mates() -> None:
    """read_entry as called positionally (no size limit): the string is a valid value."""
    text = "é" * (25 * 1024 * 1024)  # 50 MiB of UTF-8
    entry = entry_of(encode_record({"id": 1, "text": text}))
    assert entry.record is not None and entry.record["text"] == text
    records = [entry.record, {"id": 2, "text": "small"}]
    table, rejected = BatchBuilder(SCHEMA).build(records)
    assert rejected == {} and table is not None
    assert table.column("text").to_pylist() == [text, "small"]


def test_a_50_mb_record_over_max_record_bytes_is_rejected_naming_its_size() -> None:
    rec = encode_record({"id": 1, "text": "x" * (50 * 1024 * 1024)})
    fields = fields_of(REPLY_KEY, 1, rec)
    entry = read_entry(KEYS, b"1700000000000-0", fields, max_record_bytes=1024 * 1024)
    assert entry.record is None and entry.rejection is not None
    assert str(len(rec)) in entry.rejection and "max_record_bytes" in entry.rejection
    assert len(entry.rejection) < 200


@pytest.mark.parametrize(
    "rec, named",
    [
        (pack({1: 2}), "map key"),
        (pack({"id": 1, "text": {3: "x"}}), "map key"),
        (pack({Raw(b"\x91\x01"): 1}), "map key"),  # a list as a key
        (pack({"id": 1, "text": {Raw(b"\x80"): 1}}), "map key"),  # a map as a key
        (pack({"id": 1, "text": {1.5: 1}}), "map key"),
        (pack({b"id": 1}), "field names must be strings"),
        (pack({None: 1}), "map key"),
    ],
    ids=["int", "nested-int", "list", "nested-map", "nested-float", "bytes", "nil"],
)
def test_a_map_key_that_is_not_a_string_is_rejected_naming_the_key(rec: bytes, named: str) -> None:
    entry = entry_of(rec)
    assert entry.record is None and entry.rejection is not None
    assert named in entry.rejection, entry.rejection


def test_a_timestamp_past_the_last_datetime_is_rejected_naming_the_field() -> None:
    far = b"\x81\xa2ts\xc7\x0c\xff\x00\x00\x00\x00\x00\x00\x00:\xff\xf4A\x80"
    entry = entry_of(far)
    assert entry.record is None and entry.rejection is not None
    assert "field 'ts'" in entry.rejection and "out of range" in entry.rejection


def test_a_nested_map_keyed_by_bytes_is_rejected_naming_the_field_and_the_key() -> None:
    entry = entry_of(pack({"id": 1, "text": {b"k": "v"}}))
    assert entry.record is None
    assert entry.rejection is not None
    assert "field 'text'" in entry.rejection and "map keys must be strings" in entry.rejection


@pytest.mark.parametrize(
    "code, payload, named",
    [
        (-1, b"\x00", "timestamp"),
        (-1, struct.pack(">Iq", 10**9, 0), "nanoseconds"),
        (1, b"\x00" * 7, "datetime"),
        (1, struct.pack(">q", 2**63 - 1), "out of range"),
        (3, b"\x00", "date"),
        (2, packb([1, 2]), "array"),
        (2, packb(["<f4", [4], b"\x00" * 3]), "array data"),
        (2, packb(["|O8", [1], b"\x00" * 8]), "dtype"),
        (2, packb(["<f4", [2**62, 2**62, 0], b""]), "shape"),
        (99, b"garbage", "extension type 99"),
        (-128, b"", "extension type -128"),
    ],
    ids=[
        "timestamp-1-byte",
        "timestamp-bad-nanoseconds",
        "datetime-7-bytes",
        "datetime-out-of-range",
        "date-1-byte",
        "array-not-3-parts",
        "array-short-data",
        "array-object-dtype",
        "array-huge-shape",
        "unknown-99",
        "unknown-minus-128",
    ],
)
def test_an_extension_with_a_garbage_payload_is_rejected_naming_it(
    code: int, payload: bytes, named: str
) -> None:
    entry = entry_of(pack({"id": 1, "vector": Ext(code, payload)}))
    assert entry.record is None and entry.rejection is not None
    assert named in entry.rejection, entry.rejection


@pytest.mark.parametrize(
    "rec, named",
    [
        (pack({"id": 1, "text": Raw(nested_lists(10_000))}), "nest"),
        (pack({"id": 1, "text": Raw(b"\xc1")}), "0xc1"),
        (pack({"id": 1, "vector": Ext(2, b"\xc1")}), "array"),
        (pack({"id": 1, "vector": Ext(2, b"")}), "array"),
        (pack({"id": 1, "vector": Ext(2, nested_lists(2000))}), "array"),
    ],
    ids=["deep-nesting", "reserved-byte", "array-reserved-byte", "array-empty", "array-deep"],
)
def test_a_rejection_names_the_problem_not_just_undecodable(rec: bytes, named: str) -> None:
    entry = entry_of(rec)
    assert entry.rejection is not None and named in entry.rejection, entry.rejection


def test_a_zero_dimensional_array_in_an_unknown_field_is_rejected_not_crashing() -> None:
    entry = entry_of(pack({"id": 1, "extra": Ext(2, packb(["<f4", [], b"\x00" * 4]))}))
    assert entry.record is not None
    _, _, rejected = build_and_account(BatchBuilder(SCHEMA), [entry.record, {"id": 2}])
    assert list(rejected) == [0] and "extra" in rejected[0]


def test_a_zero_dimensional_array_in_a_first_batch_is_rejected_not_crashing() -> None:
    entry = entry_of(pack({"id": 1, "x": Ext(2, packb(["<f4", [], b"\x00" * 4]))}))
    assert entry.record is not None
    records = [entry.record, {"id": 2}]
    _, _, rejected = build_and_account(BatchBuilder(infer_schema(records)), records)
    assert 1 not in rejected


def test_a_complex_array_in_a_first_batch_is_rejected_not_crashing() -> None:
    entry = entry_of(pack({"id": 1, "z": Ext(2, packb(["<c8", [1], b"\x00" * 8]))}))
    assert entry.record is not None
    records = [entry.record, {"id": 2}]
    _, _, rejected = build_and_account(BatchBuilder(infer_schema(records)), records)
    assert 1 not in rejected


def test_six_hundred_nested_lists_are_rejected_when_read_naming_the_field() -> None:
    entry = entry_of(pack({"id": 1, "deep": Raw(nested_lists(600))}))
    assert entry.record is None and entry.rejection is not None
    assert "field 'deep'" in entry.rejection and "nest deeper" in entry.rejection


def test_a_non_utf8_nested_map_key_is_rejected_when_read_naming_the_field() -> None:
    entry = entry_of(pack({"id": 1, "m": {b"\x80": 0}}))
    assert entry.record is None and entry.rejection is not None
    assert "field 'm'" in entry.rejection and "map keys must be strings" in entry.rejection


@pytest.mark.parametrize(
    "value", [[0, [0]], [{"a": 1}, 1], {"a": [0, [0]]}], ids=["list", "map", "nested"]
)
def test_a_value_arrow_cannot_type_in_a_first_batch_is_handled_without_crashing(value: Any) -> None:
    entry = entry_of(pack({"id": 1, "mixed": value}))
    assert entry.record is not None
    records = [entry.record, {"id": 2}]
    _, _, rejected = build_and_account(BatchBuilder(infer_schema(records)), records)
    assert 1 not in rejected


def test_a_list_of_empty_maps_in_a_first_batch_does_not_fail_its_batch_mates(
    tmp_path: Path,
) -> None:
    records: list[dict[str, Any]] = [{"id": 1, "tags": [{}]}, {"id": 2, "tags": None}]
    schema = infer_schema(records)
    table, rejected = BatchBuilder(schema).build(records)
    assert table is not None
    db = lancedb.connect(str(tmp_path / "db"))
    db.create_table("docs", schema=schema).add(table)
    assert 1 not in rejected


def test_a_timestamp_with_nanoseconds_is_rejected_not_truncated() -> None:
    entry = entry_of(pack({"id": 1, "ts": Ext(-1, struct.pack(">Iq", 1, 0))}))
    assert entry.record is None and entry.rejection is not None
    assert "nanosecond" in entry.rejection


def test_a_reply_key_with_a_trailing_newline_is_not_answered() -> None:
    fields = fields_of(KEYS.reply("abc") + "\n", 1, encode_record({"id": 1}))
    assert read_entry(KEYS, b"1-0", fields).reply_key is None
