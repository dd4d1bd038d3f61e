"""The table's schema when neither the table nor ``--schema`` exists: from the first batch."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pyarrow as pa

from lancequeue.common.errors import ConfigError
from lancequeue.writer.loading import load_object
from lancequeue.writer.strict_values import holds_int_over_int64

logger = logging.getLogger(__name__)


def infer_schema(records: list[dict[str, Any]]) -> pa.Schema:
    """Columns in order of first appearance, all nullable.

    Vectors (1-D numpy float arrays, or lists of numbers with at least one float) become
    fixed-size lists of float32 of the first vector's length. Other columns take the type Arrow
    infers from all of the batch's values (ints and floats together make float64). A column
    with no value in the batch (only nulls or empty lists, or integers over 2**63-1, whose
    records are refused) is left out: give ``--schema`` to type it.
    """
    values: dict[str, list[Any]] = {}
    for record in records:
        for name, value in record.items():
            column = values.setdefault(name, [])
            # an int over 2**63-1 types nothing: LanceDB's add() refuses its record, as we do
            if not is_empty(value) and not holds_int_over_int64(value):
                column.append(value)
    fields = []
    for name, column in values.items():
        if not column:
            logger.warning("column %r has no value in the first batch: left out", name)
            continue
        data_type = _column_type(column)
        if data_type is None or not _storable(data_type):
            # Left out: the records with a value in it are rejected as having an unknown field.
            logger.warning("column %r: no table type fits its first values; left out", name)
            continue
        fields.append(pa.field(name, data_type, nullable=True))
    return pa.schema(fields)


def is_empty(value: Any) -> bool:
    """None, or an empty list, map or array: a value that says nothing about its column."""
    if isinstance(value, np.ndarray):
        return value.size == 0
    return value is None or (isinstance(value, (list, dict)) and len(value) == 0)


def is_vector_value(value: Any) -> bool:
    if isinstance(value, np.ndarray):
        return value.ndim == 1 and value.dtype.kind == "f"
    if not isinstance(value, list):
        return False
    numbers = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in value)
    return numbers and any(isinstance(x, float) for x in value)


def _column_type(column: list[Any]) -> pa.DataType | None:
    """The column's type, or None if no type fits its first value."""
    first = column[0]
    if is_vector_value(first):
        return pa.list_(pa.float32(), len(first))
    try:
        if isinstance(first, np.ndarray):
            if first.ndim != 1:
                return None
            return pa.list_(pa.from_numpy_dtype(first.dtype))
        try:
            return pa.infer_type(column)
        except (pa.ArrowException, TypeError, ValueError):
            return pa.infer_type([first])  # mixed kinds: the first value decides
    except (pa.ArrowException, TypeError, ValueError, RecursionError):
        return None


def _storable(data_type: pa.DataType) -> bool:
    """Whether a Lance table can hold the type: no empty structs, no null-typed columns."""
    if pa.types.is_null(data_type):
        return False
    if pa.types.is_struct(data_type):
        return data_type.num_fields > 0 and all(
            _storable(data_type.field(i).type) for i in range(data_type.num_fields)
        )
    if (
        pa.types.is_list(data_type)
        or pa.types.is_large_list(data_type)
        or pa.types.is_fixed_size_list(data_type)
    ):
        return _storable(data_type.value_type)
    return True


def resolve_schema(spec: Any) -> pa.Schema | None:
    """A pyarrow schema from a schema, a LanceModel class, or ``module:attr`` naming either."""
    if spec is None:
        return None
    if isinstance(spec, str):
        spec = load_object(spec, "--schema")
    if isinstance(spec, pa.Schema):
        return spec
    to_arrow = getattr(spec, "to_arrow_schema", None)
    if callable(to_arrow):
        schema = to_arrow()
        if isinstance(schema, pa.Schema):
            return schema
    raise ConfigError(f"schema must be a pyarrow.Schema or a LanceModel, got {spec!r}")
