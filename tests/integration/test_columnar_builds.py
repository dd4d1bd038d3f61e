"""A columnar entry builds, and lands, as its records would one by one: the column-by-column fast
path (``BatchBuilder._from_columns``) against the record-by-record one (``BatchBuilder.build``)
and LanceDB's ``table.add()``, on tricky and random columns.

A test that exposes a defect is marked ``xfail(strict=True)``, its reason starting ``DEFECT:``:
it fails once the defect is fixed (then drop the mark)."""

from __future__ import annotations

import asyncio
import random
import warnings
from collections.abc import Callable
from typing import Any

import lancedb
import numpy as np
import pyarrow as pa
import pytest
import redis

from lancequeue.common.codec import decode_record, encode_record, packb
from lancequeue.common.columns import encode_columns, encode_fields
from lancequeue.common.entries import columnar_entry_fields
from lancequeue.common.errors import RecordRejected
from lancequeue.producer import Producer
from lancequeue.writer.arrow_batch import BatchBuilder
from lancequeue.writer.entries import Entry, read_entries
from tests.support import (
    KEYS,
    StartWriter,
    as_entry,
    table_ids,
    writer_serving,
)

pytestmark = pytest.mark.timeout(120)


def columnar(
    body: bytes, count: int, reply: str = KEYS.reply("p1"), seq: int = 1, version: bytes = b"1"
) -> dict[bytes, bytes]:
    return as_entry(columnar_entry_fields(reply, seq, count, body, 600_000, version))


def rows_of(body: bytes, count: int) -> list[Entry]:
    return read_entries(KEYS, b"1-0", columnar(body, count))


def comparable(table: pa.Table | None) -> Any:
    """A table as something ``==`` compares (NaN equal to NaN, through repr)."""
    return None if table is None else (str(table.schema), repr(table.to_pylist()))


def both_ways(schema: pa.Schema, cols: dict[str, Any], count: int) -> dict[str, Any]:
    """Build one columnar entry's records through ``build_rows`` (fast path when it can) and
    record by record through ``build``; also what the fast path alone gave."""
    rows = rows_of(packb(cols), count)
    whole = {row.rejection for row in rows}
    if len(whole) == 1 and None not in whole:
        # Refused as a whole: an array column whose rows are not arrays, or are empty (they
        # would cost nothing to send, and n Python objects each to read).
        reason = whole.pop() or ""
        assert "two or more dimensions" in reason or "array of empty rows" in reason, reason
        return {"refused": reason}
    assert all(row.rejection is None for row in rows), [row.rejection for row in rows]
    builder = BatchBuilder(schema)
    fast = builder._from_columns(rows[0].block, list(range(count)))  # type: ignore[arg-type]
    by_rows, rejected_by_rows = builder.build_rows(rows)
    by_records, rejected_by_records = builder.build([row.materialized() or {} for row in rows])
    return {
        "fast": fast,
        "rows": (comparable(by_rows), rejected_by_rows),
        "records": (comparable(by_records), rejected_by_records),
    }


I64 = pa.schema([pa.field("id", pa.int64(), nullable=False), pa.field("x", pa.int64())])


U64 = pa.schema([pa.field("id", pa.int64()), pa.field("x", pa.uint64())])


I8 = pa.schema([pa.field("id", pa.int64()), pa.field("x", pa.int8())])


F32 = pa.schema([pa.field("id", pa.int64()), pa.field("x", pa.float32())])


F64 = pa.schema([pa.field("id", pa.int64()), pa.field("x", pa.float64())])


BOOL = pa.schema([pa.field("id", pa.int64()), pa.field("x", pa.bool_())])


STR = pa.schema([pa.field("id", pa.int64()), pa.field("x", pa.string())])


BIN = pa.schema([pa.field("id", pa.int64()), pa.field("x", pa.binary())])


VEC = pa.schema([pa.field("id", pa.int64()), pa.field("vector", pa.list_(pa.float32(), 4))])


VEC_REQUIRED = pa.schema(
    [pa.field("id", pa.int64()), pa.field("vector", pa.list_(pa.float32(), 4), nullable=False)]
)


VEC_ITEMS_REQUIRED = pa.schema(
    [
        pa.field("id", pa.int64()),
        pa.field("vector", pa.list_(pa.field("item", pa.float32(), nullable=False), 4)),
    ]
)


STRUCT = pa.schema(
    [
        pa.field("id", pa.int64()),
        pa.field("s", pa.struct([pa.field("a", pa.int64(), nullable=False)])),
    ]
)


LIST = pa.schema(
    [pa.field("id", pa.int64()), pa.field("l", pa.list_(pa.field("item", pa.int64(), False)))]
)


TS = pa.schema([pa.field("id", pa.int64()), pa.field("t", pa.timestamp("us"))])


DATE = pa.schema([pa.field("id", pa.int64()), pa.field("d", pa.date32())])


DICT = pa.schema(
    [pa.field("id", pa.int64()), pa.field("x", pa.dictionary(pa.int32(), pa.string()))]
)


NULLABLE = pa.schema([pa.field("id", pa.int64()), pa.field("x", pa.string())])


JSON = pa.schema([pa.field("id", pa.int64()), pa.field("j", pa.json_())])


TRICKY = [
    ("bool in int", I64, {"id": [1, 2], "x": [True, 3]}, 2),
    ("uint64 max in int64", I64, {"id": [1, 2], "x": [2**64 - 1, 3]}, 2),
    ("int64 min and max", I64, {"id": [1, 2], "x": [-(2**63), 2**63 - 1]}, 2),
    ("null in non-null", I64, {"id": [1, None], "x": [1, 3]}, 2),
    ("non-null column missing", I64, {"x": [1, 3]}, 2),
    ("unknown columns of empty values", I64, {"id": [1, 2], "z": [[], {}], "w": [None, None]}, 2),
    ("unknown column of empty arrays", I64, {"id": [1, 2], "z": np.zeros((2, 0), "<f4")}, 2),
    ("unknown column with a value", I64, {"id": [1, 2], "z": [None, "x"]}, 2),
    ("u8 array for int64", I64, {"id": np.array([1, 2**64 - 1], "<u8"), "x": [1, 2]}, 2),
    ("f8 array for int64", I64, {"id": np.array([1.0, 2.5], "<f8"), "x": [1, 2]}, 2),
    ("b1 array for int64", I64, {"id": np.array([True, False]), "x": [1, 2]}, 2),
    ("negative for uint64", U64, {"id": [1, 2], "x": [2**64 - 1, -1]}, 2),
    ("i8 array negative for uint64", U64, {"id": [1, 2], "x": np.array([-1, 2], "<i8")}, 2),
    ("300 for int8", I8, {"id": [1, 2], "x": [300, 2]}, 2),
    ("1e300 for float32", F32, {"id": [1, 2], "x": [1.5, 1e300]}, 2),
    ("f8 array 1e300 for float32", F32, {"id": [1, 2], "x": np.array([1.5, 1e300])}, 2),
    ("c8 array for float32", F32, {"id": [1, 2], "x": np.array([1 + 2j, 1], "<c8")}, 2),
    ("int for float32", F32, {"id": [1, 2], "x": [1, 2**60]}, 2),
    ("NaN and inf for float64", F64, {"id": [1, 2], "x": [float("nan"), float("inf")]}, 2),
    ("bool for float64", F64, {"id": [1, 2], "x": [True, 1.5]}, 2),
    ("u8 array for float64", F64, {"id": [1, 2], "x": np.array([2**63 + 5, 2], "<u8")}, 2),
    ("i1 array for bool", BOOL, {"id": [1, 2], "x": np.array([1, 0], "|i1")}, 2),
    ("int for bool", BOOL, {"id": [1, 2], "x": [1, True]}, 2),
    ("bytes for string", STR, {"id": [1, 2], "x": [b"ab", "c"]}, 2),
    ("array for string", STR, {"id": [1, 2], "x": np.array([1, 2], "|u1")}, 2),
    ("str for binary", BIN, {"id": [1, 2], "x": ["ab", b"c"]}, 2),
    ("2-d array for binary", BIN, {"id": [1, 2], "x": np.zeros((2, 3), "|u1")}, 2),
    (
        "inf in a vector",
        VEC,
        {"id": [1, 2], "vector": np.array([[1, 2, 3, np.inf], [1] * 4], "<f4")},
        2,
    ),
    (
        "NaN in a vector",
        VEC,
        {"id": [1, 2], "vector": np.array([[1, 2, 3, np.nan], [1] * 4], "<f4")},
        2,
    ),
    ("float64 vectors", VEC, {"id": [1, 2], "vector": np.ones((2, 4), "<f8")}, 2),
    ("float64 vectors over float32", VEC, {"id": [1, 2], "vector": np.full((2, 4), 1e300)}, 2),
    ("float16 vectors", VEC, {"id": [1, 2], "vector": np.ones((2, 4), "<f2")}, 2),
    ("int vectors", VEC, {"id": [1, 2], "vector": np.ones((2, 4), "<i4")}, 2),
    ("complex vectors", VEC, {"id": [1, 2], "vector": np.ones((2, 4), "<c8")}, 2),
    ("vectors of the wrong dim", VEC, {"id": [1, 2], "vector": np.ones((2, 5), "<f4")}, 2),
    ("3-d vector column", VEC, {"id": [1, 2], "vector": np.ones((2, 4, 1), "<f4")}, 2),
    ("vectors as lists", VEC, {"id": [1, 2], "vector": [[1.0] * 4, [1, 2, 3, True]]}, 2),
    ("1-d array for a vector", VEC, {"id": [1, 2], "vector": np.ones(2, "<f4")}, 2),
    ("required vector null", VEC_REQUIRED, {"id": [1, 2], "vector": [None, [1.0] * 4]}, 2),
    ("required vector missing", VEC_REQUIRED, {"id": [1, 2]}, 2),
    (
        "vector items required",
        VEC_ITEMS_REQUIRED,
        {"id": [1, 2], "vector": np.ones((2, 4), "<f4")},
        2,
    ),
    ("struct nulls", STRUCT, {"id": [1, 2], "s": [None, None]}, 2),
    ("struct child null", STRUCT, {"id": [1, 2], "s": [{"a": None}, {"a": 1}]}, 2),
    ("struct unknown child", STRUCT, {"id": [1, 2], "s": [{"a": 1, "b": 2}, {"a": 1}]}, 2),
    ("list item null", LIST, {"id": [1, 2], "l": [[1, None], [1]]}, 2),
    ("list as u8 array", LIST, {"id": [1, 2], "l": np.array([[2**64 - 1, 2], [3, 4]], "<u8")}, 2),
    ("int array for timestamp", TS, {"id": [1, 2], "t": np.array([1, 2], "<i8")}, 2),
    ("int for timestamp", TS, {"id": [1, 2], "t": [1, None]}, 2),
    ("int array for date", DATE, {"id": [1, 2], "d": np.array([1, 2], "<i4")}, 2),
    ("dictionary nulls", DICT, {"id": [1, 2], "x": [None, None]}, 2),
    ("dictionary values", DICT, {"id": [1, 2], "x": ["a", None]}, 2),
    ("JSON column", JSON, {"id": [1, 2], "j": [{"a": 1}, "not json"]}, 2),
    ("empty body, all nullable", NULLABLE, {}, 3),
    ("empty body, id required", I64, {}, 3),
    ("n=1", NULLABLE, {"id": [7], "x": ["a"]}, 1),
    ("n=1 vector", VEC, {"id": [7], "vector": np.ones((1, 4), "<f4")}, 1),
]


def _random_case(rnd: random.Random) -> tuple[pa.Schema, dict[str, Any], int]:
    types = [
        pa.int64(), pa.int8(), pa.uint64(), pa.float64(), pa.float32(), pa.float16(),
        pa.bool_(), pa.string(), pa.binary(), pa.list_(pa.float32(), 3),
        pa.list_(pa.float64(), 3), pa.list_(pa.int64()), pa.timestamp("us"), pa.binary(2),
    ]  # fmt: skip
    pools: list[tuple[Callable[[pa.DataType], bool], list[Any]]] = [
        (pa.types.is_boolean, [True, False, None, 1]),
        (pa.types.is_integer, [0, -1, 127, 128, 255, -129, 2**63 - 1, -(2**63), 2**63,
                               2**64 - 1, None, True]),
        (pa.types.is_floating, [0.5, 1e300, -0.0, float("nan"), float("inf"), 65520.0, 3.4e38,
                                None, 1, True]),
        (pa.types.is_string, ["a", "", "\x00", None, b"a"]),
        (pa.types.is_binary, [b"", b"ab", None, "ab"]),
        (pa.types.is_fixed_size_binary, [b"", b"ab", None]),
    ]  # fmt: skip
    fields = [
        pa.field(f"f{i}", rnd.choice(types), nullable=rnd.random() < 0.6)
        for i in range(rnd.randint(1, 3))
    ]
    count = rnd.choice([1, 2, 3])
    cols: dict[str, Any] = {}
    for field in fields:
        roll = rnd.random()
        if roll < 0.1:
            continue
        if pa.types.is_fixed_size_list(field.type) and roll < 0.7:
            dtype, dim = rnd.choice(["<f4", "<f8", "<f2", "<i4"]), rnd.choice([3, 3, 2])
            values = [
                rnd.choice([0.5, np.inf, np.nan, 1e38, 1e300, 65504]) for _ in range(count * dim)
            ]
            with np.errstate(over="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                cols[field.name] = np.array(values).astype(dtype).reshape(count, dim)
        elif roll < 0.8:
            pool = next((p for test, p in pools if test(field.type)), [None, [1], {"a": 1}])
            cols[field.name] = [rnd.choice(pool) for _ in range(count)]
        else:
            dtype = rnd.choice(["|b1", "|i1", "<i8", "<u8", "<f2", "<f4", "<f8"])
            shape = rnd.choice([(count,), (count, 3), (count, 0)])
            cols[field.name] = np.ones(shape, dtype)
    if rnd.random() < 0.2:
        cols["unknown"] = [rnd.choice([None, [], {}]) for _ in range(count)]
    return pa.schema(fields), cols, count


FAST_CASES = [
    (
        "inf in a vector",
        VEC,
        {"id": [1, 2], "vector": np.array([[1, 2, 3, np.inf], [1] * 4], "<f4")},
        2,
    ),
    ("int64 min and max", I64, {"id": [1, 2], "x": [-(2**63), 2**63 - 1]}, 2),
    ("uint64 up to int64 max", U64, {"id": [1, 2], "x": [2**63 - 1, 0]}, 2),
    ("NaN and inf for float64", F64, {"id": [1, 2], "x": [float("nan"), float("-inf")]}, 2),
    ("struct nulls", STRUCT, {"id": [1, 2], "s": [None, None]}, 2),
    ("unknown columns of empty values", I64, {"id": [1, 2], "z": [[], {}], "w": [None, None]}, 2),
    (
        "vector items required",
        VEC_ITEMS_REQUIRED,
        {"id": [1, 2], "vector": np.ones((2, 4), "<f4")},
        2,
    ),
    ("n=1", NULLABLE, {"id": [7], "x": ["\x00"]}, 1),
]


@pytest.mark.parametrize(
    ("schema", "cols", "count"), [case[1:] for case in TRICKY], ids=[case[0] for case in TRICKY]
)
def test_a_columnar_entry_builds_as_its_records_would_one_by_one(
    schema: pa.Schema, cols: dict[str, Any], count: int
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # complex to float
        built = both_ways(schema, cols, count)
    if "refused" in built:
        return
    assert built["rows"] == built["records"]
    if built["fast"] is not None:  # the fast path took it: record by record takes it whole
        table, rejected = built["records"]
        assert rejected == {}
        assert comparable(built["fast"]) == table


def test_random_columnar_entries_build_as_their_records_would_one_by_one() -> None:
    rnd = random.Random(20240611)
    fast = 0
    for _ in range(1500):
        schema, cols, count = _random_case(rnd)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            built = both_ways(schema, cols, count)
        if "refused" in built:
            continue
        assert built["rows"] == built["records"], (schema, cols)
        if built["fast"] is not None:
            fast += 1
            assert built["records"][1] == {}, (schema, cols)
            assert comparable(built["fast"]) == built["records"][0], (schema, cols)
    assert fast > 100  # the fast path was exercised, not only the fallback


@pytest.mark.parametrize(
    ("schema", "cols", "count"),
    [case[1:] for case in FAST_CASES],
    ids=[case[0] for case in FAST_CASES],
)
def test_what_the_fast_path_writes_lancedb_s_add_takes_too(
    schema: pa.Schema, cols: dict[str, Any], count: int, tmp_path: Any
) -> None:
    rows = rows_of(packb(cols), count)
    builder = BatchBuilder(schema)
    fast = builder._from_columns(rows[0].block, list(range(count)))  # type: ignore[arg-type]
    assert fast is not None  # the case is one the fast path takes
    table = lancedb.connect(str(tmp_path)).create_table("ref", schema=schema)
    for row in rows:
        # Unknown keys with no value are ignored, a documented rule (parity_rules.UNKNOWN_EMPTY_KEY)
        values = {k: v for k, v in (row.materialized() or {}).items() if k in schema.names}
        table.add([values])  # raises if add() refuses it
    assert table.count_rows() == count


def test_a_uint64_value_add_refuses_is_not_written(tmp_path: Any) -> None:
    cols = {"id": [1, 2, 3], "x": [2**64 - 1, 2**63, 2**63 - 1]}
    rows = rows_of(packb(cols), 3)
    table = lancedb.connect(str(tmp_path)).create_table("ref", schema=U64)
    for row in rows[:2]:
        with pytest.raises(OverflowError):
            table.add([row.materialized() or {}])
    table.add([rows[2].materialized() or {}])
    built, rejected = BatchBuilder(U64).build_rows(rows)  # as a columnar entry
    assert sorted(rejected) == [0, 1]
    assert "over 2**63-1" in rejected[1]
    assert built is not None and built.column("x").to_pylist() == [2**63 - 1]
    alone = BatchBuilder(U64).build([row.materialized() or {} for row in rows])  # one by one
    assert sorted(alone[1]) == [0, 1]


NESTED_U64 = pa.schema(
    [
        pa.field("id", pa.int64()),
        pa.field("l", pa.list_(pa.uint64())),
        pa.field("s", pa.struct([pa.field("a", pa.uint64())])),
        pa.field("m", pa.map_(pa.string(), pa.uint64())),
    ]
)


@pytest.mark.parametrize(
    "record",
    [{"id": 1, "l": [1, 2**63]}, {"id": 2, "s": {"a": 2**63}}, {"id": 3, "m": {"k": 2**64 - 1}}],
    ids=["list item", "struct field", "map value"],
)
def test_an_int_over_int64_nested_in_a_uint64_field_is_refused_as_add_refuses_it(
    record: dict[str, Any], tmp_path: Any
) -> None:
    table = lancedb.connect(str(tmp_path)).create_table("ref", schema=NESTED_U64)
    with pytest.raises(OverflowError):
        table.add([record])
    _, rejected = BatchBuilder(NESTED_U64).build([record])
    assert list(rejected) == [0] and "over 2**63-1" in rejected[0]


def test_a_zero_dimensional_value_is_refused_however_its_record_travels(tmp_path: Any) -> None:
    schema = pa.schema([pa.field("id", pa.int64()), pa.field("x", pa.float64())])
    records = [{"id": 1, "x": np.array(2.0)}, {"id": 2, "x": np.array(3.0)}]
    builder = BatchBuilder(schema)
    _, alone = builder.build([decode_record(encode_record(r)) for r in records])
    assert sorted(alone) == [0, 1]  # sent one by one: both rejected
    reference = lancedb.connect(str(tmp_path)).create_table("ref", schema=schema)
    for one in records:
        with pytest.raises(Exception, match="1-dimensional"):
            reference.add([one])  # and add() refuses each
    body = encode_columns([encode_fields(r) for r in records])  # as the Python producer sends
    table, together = builder.build_rows(rows_of(body, 2))
    assert sorted(together) == [0, 1], f"written: {None if table is None else table.to_pylist()}"


async def test_a_record_s_outcome_does_not_depend_on_its_batch_mates(
    start_writer: StartWriter, client: redis.Redis, redis_url: str, db_uri: str
) -> None:
    schema = pa.schema([pa.field("id", pa.int64()), pa.field("x", pa.float64())])
    start_writer(schema=schema, coalesce_ms=20)
    await writer_serving(client)

    def send() -> tuple[list[Any], list[Any]]:
        with Producer("docs", redis_url=redis_url) as producer:
            alone = producer.enqueue_many([{"id": 1, "x": np.array(2.0)}])
            together = producer.enqueue_many(
                [{"id": 2, "x": np.array(3.0)}, {"id": 3, "x": np.array(4.0)}]
            )
            return (
                [f.exception(30) for f in alone],
                [f.exception(30) for f in together],
            )

    alone, together = await asyncio.to_thread(send)
    assert isinstance(alone[0], RecordRejected)
    assert [type(error) for error in together] == [RecordRejected, RecordRejected], (
        f"table holds {table_ids(db_uri)}"
    )
