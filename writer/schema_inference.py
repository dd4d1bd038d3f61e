"""The table's schema when neither the table nor ``--schema`` exists: from the first batch."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pyarrow as pa

logger = logging.getLogger(__name__)


def infer_schema(records: list[dict[str, Any]]) -> pa.Schema:
    """Columns in order of first appearance, all nullable.

    Vectors (1-D numpy float arrays, or lists of numbers with at least one float) become
    fixed-size lists of float32 of the first vector's length. Other columns take the type Arrow
    infers from all of the batch's values (ints and floats together make float64). A column
    with no value in the batch (only nulls or empty lists) is left out: give ``--schema`` to
    type it.
    """
    values: dict[str, list[Any]] = {}
    for record in records:
        for name, value in record.items():
            column = values.setdefault(name, [])
            if not is_empty(value):
                column.append(value)
    fields = []
    for name, column in values.items():
        if not column:
            logger.warning("column %r has no value in the first batch: left out", name)
            continue
        fields.append(pa.field(name, _column_type(column), nullable=True))
    return pa.schema(fields)


def is_empty(value: Any) -> bool:
    """None, or an empty list, map or array: a value that says nothing about its column."""
    return value is None or (isinstance(value, (list, dict, np.ndarray)) and len(value) == 0)


def is_vector_value(value: Any) -> bool:
    if isinstance(value, np.ndarray):
        return value.ndim == 1 and value.dtype.kind == "f"
    if not isinstance(value, list):
        return False
    numbers = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in value)
    return numbers and any(isinstance(x, float) for x in value)


def _column_type(column: list[Any]) -> pa.DataType:
    first = column[0]
    if is_vector_value(first):
        return pa.list_(pa.float32(), len(first))
    if isinstance(first, np.ndarray):
        return pa.list_(pa.from_numpy_dtype(first.dtype))
    try:
        return pa.infer_type(column)
    except (pa.ArrowException, TypeError, ValueError):
        return pa.infer_type([first])  # mixed kinds: the first value decides, others rejected
