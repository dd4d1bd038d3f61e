"""Hostile input: random bytes and random msgpack thrown at the writer's decode and validate path.

Whatever a stream entry holds, ``read_entry`` returns (no crash, no hang) an entry that carries
either a record or a rejection naming what was wrong; whatever records decoded, the batch
builder puts each either into the Arrow batch or into the rejected map with a reason, and one
bad record never costs its batch-mates their place.

Each bug these properties found has a test of its own below, with the smallest input.
"""

from __future__ import annotations

import logging
import os
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta, timezone
from pathlib import Path
from typing import Any

import lancedb
import msgpack
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from lancequeue.common.codec import encode_record, packb
from lancequeue.common.keys import TableKeys
from lancequeue.writer.arrow_batch import BatchBuilder
from lancequeue.writer.entries import Entry, read_entry
from lancequeue.writer.schema_inference import infer_schema
from tests.support import KEYS, stream_entry

pytestmark = pytest.mark.timeout(60)  # a hang fails fast instead of at the suite's 120 s

SETTINGS = settings(
    deadline=timedelta(seconds=2),  # per example: a slow path is a failure, not a wait
    database=None,
    # The same examples every run, so the suite passes or fails the same way each time;
    # LANCEQUEUE_HYPOTHESIS_EXPLORE=1 draws new ones (to hunt for bugs, not in CI).
    derandomize=not os.environ.get("LANCEQUEUE_HYPOTHESIS_EXPLORE"),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


SCHEMA = pa.schema(
    [
        pa.field("id", pa.int64(), nullable=False),
        pa.field("text", pa.string()),
        pa.field("vector", pa.list_(pa.float32(), 4)),
        pa.field("ts", pa.timestamp("us")),
    ]
)
COLUMNS = SCHEMA.names
_PRODUCER_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


@pytest.fixture(autouse=True, scope="module")
def _quiet_writer_logs() -> Iterator[None]:
    """Thousands of hostile entries each log a warning; keep them out of the captured log."""
    loggers = [logging.getLogger(name) for name in ("lancequeue.writer", "lancequeue.common")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    yield
    for logger, level in zip(loggers, levels, strict=True):
        logger.setLevel(level)


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


# --- strategies (built once: building them per draw costs more than running the examples) ------

_VALID_DTYPES = ["|b1", "|i1", "|u1", "<i2", "<i4", "<i8", "<u2", "<u4", "<u8", "<f2", "<f4"]
_VALID_DTYPES += ["<f8", "<c8", "<c16"]
_BAD_DTYPES = ["|O8", ">f4", "<f4 ", "float32", "|V4", "|S4", "<M8[ns]", "<U1", ""]

TIMESTAMP_EXTS = st.one_of(  # the standard timestamp extension (-1) in its three sizes
    st.integers(0, 2**32 - 1).map(lambda s: Ext(-1, struct.pack(">I", s))),
    st.builds(
        lambda ns, s: Ext(-1, struct.pack(">Q", ns << 34 | s)),
        st.integers(0, 2**30 - 1),
        st.integers(0, 2**34 - 1),
    ),
    st.builds(
        lambda ns, s: Ext(-1, struct.pack(">Iq", ns, s)),
        st.integers(0, 2**32 - 1),
        st.integers(-(2**63), 2**63 - 1),
    ),
)
_DTYPES = st.one_of(
    st.sampled_from(_VALID_DTYPES), st.sampled_from(_BAD_DTYPES), st.text(max_size=5), st.none()
)
_SHAPES = st.one_of(
    st.lists(st.integers(0, 5), max_size=3),
    st.lists(st.integers(-(2**63), 2**64 - 1), min_size=1, max_size=4),
    st.sampled_from([[2**62, 2**62, 0], [0, 2**63 - 1], [1] * 100, [-1], [1.0]]),
    st.text(max_size=3),
    st.none(),
)


@st.composite
def _ndarray_exts(draw: st.DrawFn) -> Ext:
    """Extension 2 ``[dtype, shape, data]``: mostly well-formed, sometimes any part wrong."""
    dtype, shape = draw(_DTYPES), draw(_SHAPES)
    size = 4
    if dtype in _VALID_DTYPES and isinstance(shape, list):
        small = all(type(n) is int and 0 <= n <= 5 for n in shape)
        size = int(np.prod(shape)) * np.dtype(dtype).itemsize if small else 0
    data = draw(st.binary(min_size=size, max_size=size) | st.binary(max_size=40))
    parts = draw(
        st.sampled_from(
            [[dtype, shape, data], [dtype, shape, data], [dtype, shape], [dtype, shape, data, 1]]
        )
        | st.just({"dtype": dtype})
    )
    return Ext(2, pack(parts))


EXTS = st.one_of(  # the codec's extensions, valid and not; unknown codes with garbage
    TIMESTAMP_EXTS,
    st.integers(-(2**63), 2**63 - 1).map(lambda us: Ext(1, struct.pack(">q", us))),
    st.integers(-(2**31), 2**31 - 1).map(lambda d: Ext(3, struct.pack(">i", d))),
    _ndarray_exts(),
    st.builds(Ext, st.sampled_from([-1, 1, 2, 3]), st.binary(max_size=24)),
    st.builds(Ext, st.integers(-128, 127), st.binary(max_size=24)),
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(),
    st.floats(width=32).map(lambda f: Raw(b"\xca" + struct.pack(">f", f))),
    st.text(max_size=12),
    st.binary(max_size=12),
    st.sampled_from([Raw(b"\xc1"), Raw(b"\xdb\xff\xff\xff\xff"), Raw(b"\xdd\xff\xff\xff\xff")]),
    st.integers(2**14, 2**20).map(lambda n: "x" * n),  # large strings
    st.integers(2**14, 2**20).map(bytes),
)
DEEP = st.builds(
    lambda depth, kind: Raw(nested_lists(depth) if kind else b"\x81\xa1k" * depth + b"\xc0"),
    st.integers(1, 1100),
    st.booleans(),
)
MAP_KEYS = st.one_of(
    st.sampled_from(COLUMNS),
    st.text(max_size=6),
    st.binary(max_size=4),
    st.integers(-5, 5),
    st.sampled_from([Raw(b"\x91\x01"), Raw(b"\x80"), Raw(b"\xc0"), Raw(b"\xcb" + bytes(8))]),
)
VALUES = st.recursive(  # any msgpack value; maps keyed by anything
    SCALARS | EXTS | DEEP,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(MAP_KEYS, inner, max_size=4),
    max_leaves=8,
)

# No NaN: a vector holding NaN is refused, as LanceDB's add() refuses it (test_bad_vectors.py).
_FOUR_FLOATS = st.lists(st.floats(width=32, allow_nan=False), min_size=4, max_size=4)
VECTORS = st.one_of(
    _FOUR_FLOATS,
    _FOUR_FLOATS.map(lambda v: np.array(v, dtype=np.float32)),
    st.lists(st.integers(-(2**24), 2**24), min_size=4, max_size=4),
)
VALID_RECORDS = st.fixed_dictionaries(  # records that fit SCHEMA, as a producer enqueues them
    {"id": st.integers(-(2**63), 2**63 - 1)},
    optional={
        "text": st.none() | st.text(max_size=20),
        "vector": st.none() | VECTORS,
        "ts": st.none() | st.datetimes() | st.datetimes(timezones=st.just(timezone.utc)),
    },
)
COMPLETE_RECORDS = st.fixed_dictionaries(  # a value of the usual kind in every column
    {
        "id": st.integers(-(2**63), 2**63 - 1),
        "text": st.text(max_size=20),
        "vector": _FOUR_FLOATS.map(lambda v: np.array(v, dtype=np.float32)),
        "ts": st.datetimes(),
    }
)
_FIELD_NAMES = st.sampled_from(COLUMNS) | st.text(max_size=6)
_MAPS = st.dictionaries(_FIELD_NAMES, VALUES, max_size=5)
_VALID_RECS = VALID_RECORDS.map(encode_record)
REC_PAYLOADS = st.one_of(  # what a 'rec' field may hold: anything from noise to a valid record
    st.binary(max_size=64),
    VALUES.map(pack),
    _MAPS.map(pack),
    st.builds(  # a valid record with one field, a column or not, replaced by a hostile value
        lambda record, name, value: pack(
            {**{k: Raw(packb(v)) for k, v in record.items()}, name: value}
        ),
        VALID_RECORDS,
        _FIELD_NAMES,
        VALUES,
    ),
    _VALID_RECS,
    st.builds(lambda rec, n: rec[:n], _VALID_RECS, st.integers(0, 40)),  # cut short
    st.builds(lambda rec, tail: rec + tail, _MAPS.map(pack), st.binary(min_size=1, max_size=4)),
)

_SUFFIXES = st.text(max_size=70)
REPLY_KEYS = st.one_of(  # this table's reply keys, near misses, other keys, undecodable bytes
    st.from_regex(_PRODUCER_ID, fullmatch=True).map(lambda p: KEYS.reply(p).encode()),
    _SUFFIXES.map(lambda s: (KEYS.reply_prefix + s).encode("utf-8", "surrogatepass")),
    st.sampled_from(
        [
            TableKeys("other").reply("p").encode(),
            KEYS.stream.encode(),
            KEYS.lease.encode(),
            KEYS.reply_prefix.encode(),
            (KEYS.reply_prefix + "a" * 65).encode(),
            (KEYS.reply_prefix + "a:b").encode(),
            b"session:42",
            b"",
            b"\xff\xfe",
            KEYS.reply("p").encode() + b"\xff",
        ]
    ),
    st.binary(max_size=40),
)
_NUMBERS = st.one_of(
    st.integers(0, 2**70).map(lambda n: str(n).encode()),
    st.sampled_from([b"-1", b"1.0", b" 1", b"1 ", b"0x10", b"", b"1e3", b"\xd9\xa1"]),
    st.binary(max_size=8),
)
_VERSIONS = st.one_of(
    st.just(b"1"),
    st.sampled_from([b"2", b"01", b"1 ", b"", b"\xff"]),
    st.binary(max_size=8),
    st.integers(2**16, 2**20).map(bytes),
)
ENTRY_FIELDS = st.builds(  # each known field missing, valid or garbage; garbage fields besides
    lambda extra, known: {**extra, **{k: v for k, v in known.items() if v is not None}},
    st.dictionaries(st.binary(max_size=6), st.binary(max_size=12), max_size=3),
    st.fixed_dictionaries(
        {
            b"v": st.none() | _VERSIONS,
            b"reply": st.none() | REPLY_KEYS,
            b"seq": st.none() | _NUMBERS,
            b"ttl": st.none() | _NUMBERS,
            b"rec": st.none() | REC_PAYLOADS,
        }
    ),
)
ENTRY_IDS = st.builds(lambda ms, n: f"{ms}-{n}".encode(), st.integers(0, 2**48), st.integers(0, 99))


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


# --- properties -------------------------------------------------------------------------------


@settings(SETTINGS, max_examples=150)
@given(entry_id=ENTRY_IDS, fields=ENTRY_FIELDS)
@example(entry_id=b"0-0", fields={})
@example(entry_id=b"1-1", fields={b"rec": b"\x80"})
@example(entry_id=b"1-1", fields={b"v": b"1", b"rec": nested_lists(10_000)})
def test_any_entry_is_read_into_a_record_or_a_named_rejection(
    entry_id: bytes, fields: dict[bytes, bytes]
) -> None:
    entry = read_entry(KEYS, entry_id, fields)
    assert_record_or_rejection(entry)
    if fields.get(b"v") not in (b"1", b"2"):
        assert entry.rejection is not None and "version" in entry.rejection
    if entry.reply_key is not None:  # answered only at one of this table's reply keys
        assert entry.reply_key.encode() == fields[b"reply"]
        assert entry.reply_key.startswith(KEYS.reply_prefix)
        assert _PRODUCER_ID.fullmatch(entry.reply_key[len(KEYS.reply_prefix) :])
        assert fields[b"seq"].isdigit() and int(fields[b"seq"]) == entry.seq < 2**63


@settings(SETTINGS, max_examples=60)
@given(payloads=st.lists(REC_PAYLOADS, max_size=6))
def test_every_decoded_record_is_in_the_batch_or_rejected_with_a_reason(
    payloads: list[bytes],
) -> None:
    records = decoded(payloads)
    landed, table, _ = build_and_account(BatchBuilder(SCHEMA), records)
    if table is not None:
        assert_rows_hold(records, landed, table)


@settings(SETTINGS, max_examples=60)
@given(
    valid=st.lists(VALID_RECORDS, min_size=1, max_size=4),
    hostile=REC_PAYLOADS,
    position=st.integers(0, 4),
)
def test_one_hostile_record_never_costs_its_valid_batch_mates(
    valid: list[dict[str, Any]], hostile: bytes, position: int
) -> None:
    records, landed, table, valid_indices = build_mixed(
        BatchBuilder(SCHEMA), valid, hostile, position
    )
    assert set(valid_indices) <= set(landed)
    assert table is not None
    assert_rows_hold(records, landed, table)


@settings(SETTINGS, max_examples=60)
@given(payloads=st.lists(REC_PAYLOADS, max_size=6))
@example(payloads=[b"\x81\xa2\x00\x00\x91\xc0"])  # {"..": [None]}: list<null>, not storable
@example(payloads=[b"\x81\xa1\x00\x81\xa1\x00\xc0"])  # {".": {".": None}}: struct<null>
def test_a_first_batch_of_any_records_defines_a_schema_that_takes_or_rejects_each(
    payloads: list[bytes],
) -> None:
    """No table yet: the schema comes from the batch itself (as TableSink.prepare does)."""
    records = decoded(payloads)
    schema = infer_schema(records)
    if len(schema) == 0:
        # No value a table type fits (none at all, or only untypable ones): the sink rejects
        # the whole batch, asking for a schema.
        return
    build_and_account(BatchBuilder(schema), records)


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
