"""What each column of the table holds, in the words producers read from the config hash
(``CONFIG_COLUMNS``): so that ``lancequeue produce`` types CSV cells by the table, not by
guessing."""

from __future__ import annotations

import json

import pyarrow as pa


def column_kinds(schema: pa.Schema) -> str:
    """The JSON object mapping each column of ``schema`` to its kind (``COLUMN_KINDS``)."""
    return json.dumps({field.name: _kind(field.type) for field in schema}, sort_keys=True)


def _kind(arrow_type: pa.DataType) -> str:
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return "string"
    if pa.types.is_integer(arrow_type):
        return "integer"
    if pa.types.is_floating(arrow_type):
        return "number"
    if pa.types.is_boolean(arrow_type):
        return "boolean"
    if (
        pa.types.is_list(arrow_type)
        or pa.types.is_large_list(arrow_type)
        or pa.types.is_fixed_size_list(arrow_type)
    ):
        return "list"
    return "other"
