"""What the differential test feeds both writers, and the rules by which lancequeue may differ.

``SCHEMAS`` are a few tables; ``records_for(schema)`` draws records for one, mixing values that
fit with values that do not (wrong kinds, NaN vectors, wrong lengths, missing required fields,
extra fields, nulls). Where lancequeue refuses what LanceDB's ``table.add()`` accepts, a rule of
lancequeue's that is deliberately stricter must explain it: ``stricter_rule`` names it.
Where lancequeue accepts what ``add()`` refuses, ``lenient_rule`` names the one documented
exception.
"""

from __future__ import annotations

import math
from datetime import date, datetime, timedelta, timezone
from typing import Any

import numpy as np
import pyarrow as pa
from hypothesis import strategies as st

LOSSY = "no lossy conversion (README: 'One bad record fails alone')"
"""1.5 for an integer, True for a float, 1e300 for float32, an integer a float column cannot
hold exactly, a datetime for a date, sub-second datetimes for second timestamps."""
OWN_KIND = "values of their own kind (PROTOCOL.md: 'Record encoding')"
"""No conversion between kinds: "5" for an integer, 5 for a string, 1 for a bool, a date or an
integer for a timestamp, a string for a list."""
VECTOR_OF_NUMBERS = "a vector is a list of numbers (PROTOCOL.md: 'Record encoding')"
"""No nulls, bools or strings inside a vector."""
UNKNOWN_EMPTY_KEY = "a key that is not a column, with no value, is ignored (PROTOCOL.md)"
"""The one place lancequeue is more lenient: ``add()`` refuses a record naming an unknown field
even when its value is null; lancequeue ignores the key (a column the first batch left out for
having no value must not reject later records that have none either)."""

ID = pa.field("id", pa.int64(), nullable=False)
VECTOR = pa.list_(pa.float32(), 4)
META = pa.struct([pa.field("a", pa.int64(), nullable=False), pa.field("b", pa.string())])
SCHEMAS = {
    "scalars": pa.schema(
        [
            ID,
            pa.field("n", pa.int64(), nullable=False),
            pa.field("i32", pa.int32()),
            pa.field("f32", pa.float32()),
            pa.field("f64", pa.float64()),
            pa.field("s", pa.string()),
            pa.field("b", pa.bool_()),
        ]
    ),
    # 'vector' is a column LanceDB applies on_bad_vectors to; 'emb' is not.
    "vectors": pa.schema([ID, pa.field("vector", VECTOR), pa.field("emb", VECTOR)]),
    "structs": pa.schema([ID, pa.field("meta", META)]),
    "lists": pa.schema(
        [ID, pa.field("tags", pa.list_(pa.string())), pa.field("nums", pa.list_(pa.int64()))]
    ),
    # LanceDB's add() refuses an int over 2**63-1 even where Arrow would take it (uint64)
    "unsigned": pa.schema([ID, pa.field("u", pa.uint64()), pa.field("us", pa.list_(pa.uint64()))]),
    "times": pa.schema(
        [
            ID,
            pa.field("ts", pa.timestamp("us")),
            pa.field("ts_s", pa.timestamp("s")),
            pa.field("d", pa.date32()),
        ]
    ),
}

_TEXT = st.text(st.characters(codec="utf-8"), max_size=6)
_INTS = st.integers(-(2**63), 2**63 - 1) | st.integers(-1000, 1000)
_DATETIMES = st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1))
_AWARE = st.builds(
    lambda moment, hours: moment.replace(tzinfo=timezone(timedelta(hours=hours))),
    _DATETIMES,
    st.integers(-12, 12),
)
_WRONG_KIND = st.one_of(
    st.booleans(),
    _INTS,
    st.floats(),
    _TEXT,
    st.binary(max_size=4),
    st.just([]),
    st.just({}),
    st.lists(_INTS, max_size=2),
)
_FOUR_FLOATS = st.lists(st.floats(width=32, allow_nan=False), min_size=4, max_size=4)
MISSING = object()
"""A 'bad value' that removes the field from the record."""


def _own(data_type: pa.DataType) -> st.SearchStrategy[Any]:
    """Values of the column's own kind (some still at its edges)."""
    if pa.types.is_boolean(data_type):
        return st.booleans()
    if pa.types.is_unsigned_integer(data_type):
        top = 2**data_type.bit_width - 1
        return st.integers(0, top) | st.integers(top - 2, top) | st.integers(0, 1000)
    if pa.types.is_integer(data_type):
        bits = data_type.bit_width
        return st.integers(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) | st.integers(-1000, 1000)
    if pa.types.is_floating(data_type):
        return st.floats(width=data_type.bit_width) | st.integers(-1000, 1000)
    if pa.types.is_string(data_type):
        return _TEXT
    if pa.types.is_fixed_size_list(data_type):
        return st.one_of(
            _FOUR_FLOATS,
            _FOUR_FLOATS.map(lambda v: np.array(v, dtype=np.float32)),
            st.lists(st.integers(-(2**20), 2**20), min_size=4, max_size=4),
        )
    if pa.types.is_list(data_type):
        return st.lists(st.none() | _own(data_type.value_type), max_size=3)
    if pa.types.is_struct(data_type):
        return st.fixed_dictionaries({"a": _INTS}, optional={"b": st.none() | _TEXT})
    if pa.types.is_timestamp(data_type):
        moments = _DATETIMES | _AWARE
        if data_type.unit == "s":
            return moments.map(lambda moment: moment.replace(microsecond=0))
        return moments
    if pa.types.is_date(data_type):
        return st.dates(min_value=date(1900, 1, 1), max_value=date(2200, 1, 1))
    raise AssertionError(f"no values for {data_type}")


def _bad(data_type: pa.DataType) -> st.SearchStrategy[Any]:
    """Values that may not fit the column: nulls, other kinds, its own kind's bad cases."""
    special: st.SearchStrategy[Any]
    if pa.types.is_integer(data_type):
        special = st.sampled_from([1.5, 2.0, True, "12", 2**40, -(2**63), 2**63, -1])
    elif pa.types.is_floating(data_type):
        special = st.sampled_from([1e300, -1e39, True, float("nan"), float("inf"), 2**25 + 1])
    elif pa.types.is_fixed_size_list(data_type):
        special = st.one_of(
            st.lists(st.floats(width=32), min_size=4, max_size=4),  # NaN now and then
            st.lists(st.just(float("nan")) | st.floats(-1, 1), min_size=4, max_size=4),
            st.lists(st.floats(-1e3, 1e3), max_size=6),  # the wrong length, now and then
            st.lists(st.floats(-1, 1), min_size=3, max_size=5).map(np.array),
            st.lists(st.none() | st.booleans() | _TEXT | st.floats(-1, 1), min_size=4, max_size=4),
            st.just([1e300, 0.0, 0.0, 0.0]),
        )
    elif pa.types.is_list(data_type):
        special = st.lists(_WRONG_KIND, min_size=1, max_size=2) | _TEXT
    elif pa.types.is_struct(data_type):
        special = st.sampled_from(
            [{}, {"b": "no a"}, {"a": None}, {"a": 1.5}, {"a": 1, "zz": 2}, {"a": 1, "b": 5}]
        )
    elif pa.types.is_timestamp(data_type):
        special = _DATETIMES | st.dates() | st.integers(0, 2**40) | st.just("2024-01-01")
    elif pa.types.is_date(data_type):
        special = _DATETIMES | st.just("2024-01-01") | st.integers(0, 2**20)
    else:
        special = _WRONG_KIND
    return st.one_of(special, special, st.none(), st.just(MISSING), _WRONG_KIND)


@st.composite
def _record(draw: st.DrawFn, schema: pa.Schema) -> dict[str, Any]:
    """A record of values of their own kind, then at most one field given a bad value, and
    now and then a field the table does not have."""
    columns = [field for field in schema if field.name != "id"]
    required = {field.name: _own(field.type) for field in columns if not field.nullable}
    optional = {field.name: _own(field.type) for field in columns if field.nullable}
    record = draw(st.fixed_dictionaries(required, optional=optional))
    if draw(st.booleans()):
        field = draw(st.sampled_from(columns))
        value = draw(_bad(field.type))
        if value is MISSING:
            record.pop(field.name, None)
        else:
            record[field.name] = value
    if draw(st.integers(0, 9)) == 0:
        record["extra"] = draw(st.none() | _INTS)
    return record


def records_for(schema: pa.Schema) -> st.SearchStrategy[list[dict[str, Any]]]:
    """Lists of records for ``schema``, each one's ``id`` its position."""
    return st.lists(_record(schema), min_size=1, max_size=5).map(
        lambda records: [{"id": index, **fields} for index, fields in enumerate(records)]
    )


def stricter_rule(record: dict[str, Any], schema: pa.Schema) -> str | None:
    """The rule of lancequeue's, stricter than ``add()``, under which it refuses ``record``, or
    None if none applies."""
    for field in schema:
        if field.name in record:
            rule = _value_rule(record[field.name], field.type)
            if rule is not None:
                return rule
    return None


def lenient_rule(record: dict[str, Any], schema: pa.Schema) -> str | None:
    """The documented rule under which lancequeue accepts ``record`` though ``add()`` refuses
    it, or None."""
    for name, value in record.items():
        if name not in schema.names and (value is None or value == [] or value == {}):
            return UNKNOWN_EMPTY_KEY
    return None


def _value_rule(value: Any, data_type: pa.DataType) -> str | None:
    if value is None:
        return None
    if pa.types.is_boolean(data_type):
        return None if isinstance(value, bool) else OWN_KIND
    if pa.types.is_integer(data_type):
        if isinstance(value, float) and not isinstance(value, bool):
            return OWN_KIND if value.is_integer() else LOSSY
        return OWN_KIND if isinstance(value, bool) or not isinstance(value, int) else None
    if pa.types.is_floating(data_type):
        return _float_rule(value, data_type.bit_width)
    if pa.types.is_string(data_type):
        return None if isinstance(value, str) else OWN_KIND
    if pa.types.is_timestamp(data_type):
        if not isinstance(value, datetime):
            return OWN_KIND
        return LOSSY if data_type.unit == "s" and value.microsecond else None
    if pa.types.is_date(data_type):
        if isinstance(value, datetime):
            return LOSSY
        return None if isinstance(value, date) else OWN_KIND
    if pa.types.is_fixed_size_list(data_type):
        return _vector_rule(value)
    if pa.types.is_list(data_type):
        if not isinstance(value, list):
            return OWN_KIND
        rules = (_value_rule(item, data_type.value_type) for item in value)
        return next((rule for rule in rules if rule is not None), None)
    if pa.types.is_struct(data_type):
        if not isinstance(value, dict):
            return OWN_KIND
        children = {
            data_type.field(i).name: data_type.field(i).type for i in range(data_type.num_fields)
        }
        rules = (_value_rule(item, children[key]) for key, item in value.items() if key in children)
        return next((rule for rule in rules if rule is not None), None)
    return None


def _float_rule(value: Any, bits: int) -> str | None:
    if isinstance(value, bool):
        return LOSSY  # True for a float
    if isinstance(value, int):
        return LOSSY if abs(value) > 2 ** (24 if bits == 32 else 53) else None
    if not isinstance(value, float):
        return OWN_KIND
    too_big = bits == 32 and math.isfinite(value) and abs(value) > float(np.finfo(np.float32).max)
    return LOSSY if too_big else None


def _vector_rule(value: Any) -> str | None:
    if isinstance(value, np.ndarray):
        numbers = value.astype(np.float64)
    elif isinstance(value, list):
        if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in value):
            return VECTOR_OF_NUMBERS
        numbers = np.array(value, dtype=np.float64)
    else:
        return OWN_KIND
    finite = numbers[np.isfinite(numbers)]
    return LOSSY if (np.abs(finite) > np.finfo(np.float32).max).any() else None
