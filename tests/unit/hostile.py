"""What the hostile-input tests share: entries and msgpack built by hand (so nothing a hostile
producer could send is out of reach), the schema they are built against, and the checks that
every record lands or is rejected with a reason."""

from __future__ import annotations

import logging
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timezone
from typing import Any

import msgpack
import numpy as np
import pyarrow as pa
import pytest

from lancequeue.common.codec import encode_record
from lancequeue.writer.arrow_batch import BatchBuilder
from lancequeue.writer.entries import Entry, read_entry
from lancequeue.writer.schema_inference import infer_schema
from tests.support import KEYS, stream_entry

SCHEMA = pa.schema(
    [
        pa.field("id", pa.int64(), nullable=False),
        pa.field("text", pa.string()),
        pa.field("vector", pa.list_(pa.float32(), 4)),
        pa.field("ts", pa.timestamp("us")),
    ]
)
COLUMNS = SCHEMA.names
PRODUCER_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


# --- msgpack built by hand, so nothing a hostile producer could send is out of reach ----------


@dataclass(frozen=True)
class Ext:
    """A msgpack extension of any code (-128..127) with any payload."""

    code: int
    payload: bytes


@dataclass(frozen=True)
class Raw:
    """Bytes spliced into the msgpack stream as they are (deep nesting, reserved bytes, ...)."""

    data: bytes


_PACKER = msgpack.Packer(use_bin_type=True)
_FIXEXT = {1: 0xD4, 2: 0xD5, 4: 0xD6, 8: 0xD7, 16: 0xD8}


def pack(value: Any) -> bytes:
    """msgpack bytes of ``value``: plain values, lists, dicts (keys of any kind), Ext and Raw."""
    if isinstance(value, Raw):
        return value.data
    if isinstance(value, Ext):
        return _ext_header(value.code, len(value.payload)) + value.payload
    if isinstance(value, list):
        header: bytes = _PACKER.pack_array_header(len(value))
        return header + b"".join(pack(item) for item in value)
    if isinstance(value, dict):
        header = _PACKER.pack_map_header(len(value))
        return header + b"".join(pack(k) + pack(v) for k, v in value.items())
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return packed


def _ext_header(code: int, size: int) -> bytes:
    signed = struct.pack(">b", code)
    if size in _FIXEXT:
        return bytes([_FIXEXT[size]]) + signed
    if size < 2**8:
        return b"\xc7" + struct.pack(">B", size) + signed
    if size < 2**16:
        return b"\xc8" + struct.pack(">H", size) + signed
    return b"\xc9" + struct.pack(">I", size) + signed


def nested_lists(depth: int) -> bytes:
    """``depth`` lists one inside the other around a nil, as msgpack."""
    return b"\x91" * depth + b"\xc0"


def fields_of(reply_key: str, seq: int, rec: bytes) -> dict[bytes, bytes]:
    """A producer's stream entry as XREADGROUP returns it: bytes to bytes."""
    return {
        k if isinstance(k, bytes) else k.encode(): v if isinstance(v, bytes) else v.encode()
        for k, v in stream_entry(reply_key, seq, rec).items()
    }


REPLY_KEY = KEYS.reply("hostile")


def entry_of(rec: bytes, seq: int = 1) -> Entry:
    return read_entry(KEYS, b"1700000000000-0", fields_of(REPLY_KEY, seq, rec))


# --- checks -----------------------------------------------------------------------------------


def assert_named(reason: object) -> None:
    """A reason is a non-empty string that says something after its last colon."""
    assert isinstance(reason, str) and reason.strip(), f"unnamed reason {reason!r}"
    assert not reason.rstrip().endswith(":"), f"reason names nothing: {reason!r}"


def assert_record_or_rejection(entry: Entry) -> None:
    assert (entry.record is None) != (entry.rejection is None), entry
    if entry.rejection is not None:
        assert_named(entry.rejection)
    else:
        assert isinstance(entry.record, dict)
        assert all(isinstance(name, str) for name in entry.record)


def decoded(payloads: list[bytes]) -> list[dict[str, Any]]:
    """The records among ``payloads`` that read_entry decodes, in order."""
    return list(decoded_by_origin(payloads).values())


def decoded_by_origin(payloads: list[bytes]) -> dict[int, dict[str, Any]]:
    """``decoded``, keyed by the index of each record's payload."""
    entries = [entry_of(rec, seq) for seq, rec in enumerate(payloads, 1)]
    for entry in entries:
        assert_record_or_rejection(entry)
    return {index: entry.record for index, entry in enumerate(entries) if entry.record is not None}


def build_and_account(
    builder: BatchBuilder, records: list[dict[str, Any]]
) -> tuple[list[int], pa.Table | None, dict[int, str]]:
    """Build; check every record is in the batch or rejected with a reason. Returns the
    indices of the records in the batch (in batch order), the batch and the rejected."""
    table, rejected = builder.build(records)
    assert set(rejected) <= set(range(len(records)))
    for reason in rejected.values():
        assert_named(reason)
    landed = [i for i in range(len(records)) if i not in rejected]
    assert (0 if table is None else table.num_rows) == len(landed)
    assert len(landed) + len(rejected) == len(records)
    return landed, table, rejected


def assert_rows_hold(records: list[dict[str, Any]], landed: list[int], table: pa.Table) -> None:
    """Each row holds its record's values as they were (vectors as float32)."""
    for index, row in zip(landed, table.to_pylist(), strict=True):
        for name in COLUMNS:
            value, stored = records[index].get(name), row[name]
            if value is None:
                assert stored is None, name
            elif name == "vector":
                with np.errstate(over="ignore", invalid="ignore"):
                    expected = np.asarray(value, dtype=np.float32)
                assert np.array_equal(np.asarray(stored, np.float32), expected, equal_nan=True)
            elif name == "ts" and value.tzinfo is not None:
                assert stored == value.astimezone(timezone.utc).replace(tzinfo=None)
            else:
                assert stored == value and type(stored) is type(value), (name, value, stored)


def build_mixed(
    builder: BatchBuilder | None, valid: list[dict[str, Any]], hostile: bytes, position: int
) -> tuple[list[dict[str, Any]], list[int], pa.Table | None, list[int]]:
    """Decode the valid records with the hostile one at ``position`` and build them (inferring
    the schema if ``builder`` is None). Returns the decoded records, the indices of those in
    the batch, the batch, and the indices of the valid records."""
    payloads = [encode_record(record) for record in valid]
    position = min(position, len(payloads))
    payloads.insert(position, hostile)
    by_origin = decoded_by_origin(payloads)
    assert set(range(len(payloads))) - {position} <= set(by_origin)  # the valid ones decoded
    records = list(by_origin.values())
    valid_indices = [i for i, origin in enumerate(by_origin) if origin != position]
    if builder is None:
        builder = BatchBuilder(infer_schema(records))
    landed, table, _ = build_and_account(builder, records)
    return records, landed, table, valid_indices


@pytest.fixture(scope="module")
def quiet_writer_logs() -> Iterator[None]:
    """Thousands of hostile entries each log a warning; keep them out of the captured log."""
    loggers = [logging.getLogger(name) for name in ("lancequeue.writer", "lancequeue.common")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    yield
    for logger, level in zip(loggers, levels, strict=True):
        logger.setLevel(level)
