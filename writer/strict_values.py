"""Strict checks of one value against an Arrow type.

Arrow converts some values silently with loss (1.5 into int64 gives 1, True into a float gives
1.0, 1e300 into float32 gives inf, a datetime into date32 drops the time, unknown struct fields
vanish). Records carrying such values are rejected instead, with the path of the value. So are
nulls where a nested field is not nullable (a struct's child, a list's items, a map's values):
Arrow builds them without complaint, and Lance then refuses the whole batch.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lancequeue.writer.json_columns import is_json_type, json_text_problem

_FLOAT_MAX = {16: float(np.finfo(np.float16).max), 32: float(np.finfo(np.float32).max)}
INT64_MAX = 2**63 - 1
"""LanceDB's ``add()`` converts Python integers as int64: it refuses a larger one anywhere in a
record (``OverflowError``), even for a uint64 column, which Arrow itself would fill."""
_MICROS_PER_UNIT = {"s": 1_000_000, "ms": 1000}


def unchecked_types(data_type: pa.DataType) -> frozenset[type]:
    """Python types whose values Arrow converts to ``data_type`` either exactly or not at all
    (an int out of range raises): a column holding only these needs no per-value check."""
    if pa.types.is_boolean(data_type):
        return frozenset({bool})
    if pa.types.is_integer(data_type):
        return frozenset({int})
    if pa.types.is_float64(data_type):
        return frozenset({float})
    if pa.types.is_string(data_type) or pa.types.is_large_string(data_type):
        return frozenset({str})
    if pa.types.is_binary(data_type) or pa.types.is_large_binary(data_type):
        return frozenset({bytes})
    return frozenset()


def value_problem(value: Any, data_type: pa.DataType) -> str | None:
    """Why ``value`` (not None) cannot go into a column of ``data_type`` as it is, or None."""
    expected = f"expected {data_type}, got {type(value).__name__}"
    if is_json_type(data_type):  # dicts and lists were made JSON text already (json_columns)
        return json_text_problem(value)
    if pa.types.is_boolean(data_type):
        return None if isinstance(value, (bool, np.bool_)) else expected
    if pa.types.is_integer(data_type):
        ok = isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
        if ok and isinstance(value, int) and value > INT64_MAX:
            return over_int64(value)
        return None if ok else expected
    if pa.types.is_floating(data_type):
        return _float_problem(value, data_type, expected)
    if pa.types.is_string(data_type) or pa.types.is_large_string(data_type):
        return None if isinstance(value, str) else expected
    if pa.types.is_binary(data_type) or pa.types.is_large_binary(data_type):
        return None if isinstance(value, bytes) else expected
    if pa.types.is_fixed_size_binary(data_type):
        if not isinstance(value, bytes):
            return expected
        return None if len(value) == data_type.byte_width else f"{expected} of {len(value)} bytes"
    if pa.types.is_timestamp(data_type):
        return _timestamp_problem(value, data_type, expected)
    if pa.types.is_date(data_type):
        ok = isinstance(value, date) and not isinstance(value, datetime)
        return None if ok else expected
    if pa.types.is_list(data_type) or pa.types.is_large_list(data_type):
        return _items_problem(value, data_type, expected)
    if pa.types.is_fixed_size_list(data_type):
        problem = _items_problem(value, data_type, expected)
        if problem is None and len(value) != data_type.list_size:
            return f"expected {data_type.list_size} items, got {len(value)}"
        return problem
    if pa.types.is_struct(data_type):
        return _struct_problem(value, data_type, expected)
    if pa.types.is_map(data_type):
        return _map_problem(value, data_type, expected)
    return None  # other types: Arrow's own conversion decides


def over_int64(value: int) -> str:
    """Why ``value``, a Python int over ``INT64_MAX``, is refused."""
    return f"{value} is over 2**63-1, the largest integer LanceDB's add() takes"


def holds_int_over_int64(value: Any) -> bool:
    """Whether ``value`` is or holds (in a list or a dict) a Python int over ``INT64_MAX``."""
    if isinstance(value, int):
        return value > INT64_MAX
    if isinstance(value, list):
        return any(holds_int_over_int64(item) for item in value)
    if isinstance(value, dict):
        return any(holds_int_over_int64(item) for item in value.values())
    return False


def uint64_over_int64(array: pa.Array) -> bool:
    """Whether ``array``, built by Arrow, is of uint64 and holds a value over ``INT64_MAX`` (one
    ``value_problem`` refuses): a column Arrow built whole may still need its values checked."""
    if not pa.types.is_uint64(array.type) or array.null_count == len(array):
        return False
    return bool(pc.max(array).as_py() > INT64_MAX)


def _float_problem(value: Any, data_type: pa.DataType, expected: str) -> str | None:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        return expected
    limit = _FLOAT_MAX.get(data_type.bit_width)
    if limit is not None and abs(float(value)) > limit and np.isfinite(float(value)):
        return f"{value} is out of range for {data_type}"
    return None


def _timestamp_problem(value: Any, data_type: pa.DataType, expected: str) -> str | None:
    if not isinstance(value, datetime):
        return expected
    micros_per_unit = _MICROS_PER_UNIT.get(data_type.unit)
    if micros_per_unit is not None and value.microsecond % micros_per_unit:
        return f"{value.isoformat()} has a precision {data_type} would drop"
    return None


def _items_problem(value: Any, data_type: pa.DataType, expected: str) -> str | None:
    item_type = data_type.value_type
    if isinstance(value, np.ndarray):
        if value.ndim != 1:
            return f"{expected} of shape {value.shape}"
        if pa.types.is_integer(item_type) and value.dtype.kind not in "iu":
            return f"expected {data_type}, got an array of {value.dtype}"
        if pa.types.is_floating(item_type) and value.dtype.kind not in "iuf":
            return f"expected {data_type}, got an array of {value.dtype}"
        return None
    if not isinstance(value, list):
        return expected
    required = not data_type.value_field.nullable
    for index, item in enumerate(value):
        if item is None:
            if required:
                return f"item {index} is required and may not be null"
        elif (problem := value_problem(item, item_type)) is not None:
            return f"item {index}: {problem}"
    return None


def _struct_problem(value: Any, data_type: pa.DataType, expected: str) -> str | None:
    if not isinstance(value, dict):
        return expected
    names = {data_type.field(i).name: data_type.field(i) for i in range(data_type.num_fields)}
    for key, item in value.items():
        if key not in names:
            return f"unknown field {key!r} (expected {', '.join(names)})"
        if item is not None and (problem := value_problem(item, names[key].type)) is not None:
            return f"{key}: {problem}"
    for name, child in names.items():
        if not child.nullable and value.get(name) is None:
            # Arrow would build the struct with a null there; Lance refuses the whole batch.
            if name in value:
                return f"field {name!r} is required and may not be null"
            return f"missing required field {name!r}"
    return None


def _map_problem(value: Any, data_type: pa.DataType, expected: str) -> str | None:
    if not isinstance(value, dict):
        return expected
    required = not data_type.item_field.nullable
    for key, item in value.items():
        if (problem := value_problem(key, data_type.key_type)) is not None:
            return f"key {key!r}: {problem}"
        if item is None:
            if required:
                return f"{key!r} is required and may not be null"
        elif (problem := value_problem(item, data_type.item_type)) is not None:
            return f"{key!r}: {problem}"
    return None
