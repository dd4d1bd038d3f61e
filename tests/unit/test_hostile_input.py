"""Hostile input: random bytes and random msgpack thrown at the writer's decode and validate path.

Whatever a stream entry holds, ``read_entry`` returns (no crash, no hang) an entry that carries
either a record or a rejection naming what was wrong; whatever records decoded, the batch
builder puts each either into the Arrow batch or into the rejected map with a reason, and one
bad record never costs its batch-mates their place.

Each bug these properties found has a test of its own, with the smallest input
(``test_hostile_worst_cases.py``).
"""

from __future__ import annotations

import os
import struct
from datetime import timedelta, timezone
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from lancequeue.common.codec import encode_record, packb
from lancequeue.common.keys import TableKeys
from lancequeue.writer.arrow_batch import BatchBuilder
from lancequeue.writer.entries import read_entry
from lancequeue.writer.schema_inference import infer_schema
from tests.support import KEYS
from tests.unit.hostile import (  # noqa: F401 - quiet_writer_logs is a fixture
    COLUMNS,
    PRODUCER_ID,
    SCHEMA,
    Ext,
    Raw,
    assert_record_or_rejection,
    assert_rows_hold,
    build_and_account,
    build_mixed,
    decoded,
    nested_lists,
    pack,
    quiet_writer_logs,
)

pytestmark = [
    pytest.mark.timeout(60),  # a hang fails fast instead of at the suite's 120 s
    pytest.mark.usefixtures("quiet_writer_logs"),
]

SETTINGS = settings(
    deadline=timedelta(seconds=2),  # per example: a slow path is a failure, not a wait
    database=None,
    # The same examples every run, so the suite passes or fails the same way each time;
    # LANCEQUEUE_HYPOTHESIS_EXPLORE=1 draws new ones (to hunt for bugs, not in CI).
    derandomize=not os.environ.get("LANCEQUEUE_HYPOTHESIS_EXPLORE"),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


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
    st.from_regex(PRODUCER_ID, fullmatch=True).map(lambda p: KEYS.reply(p).encode()),
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
        assert PRODUCER_ID.fullmatch(entry.reply_key[len(KEYS.reply_prefix) :])
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
