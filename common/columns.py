"""Columnar entries: many records in one stream entry, column by column (PROTOCOL.md, "Columnar
entries").

An entry's ``cols`` field is a msgpack map of column name to the column: a msgpack array of one
value per record (nil: the record has no value there), or, where every record holds an array of
one dtype and shape, one extension-2 array of shape ``[n, *shape]``: the vectors of a column as
one contiguous buffer, read by the writer without a Python object per record.

The producer builds the body from records it encoded one by one (``encode_columns``), so what it
sends is what it validated at ``enqueue``, whatever the caller did to the record since.
"""

from __future__ import annotations

import struct
from typing import Any

import msgpack

from lancequeue.common.codec import EXT_NDARRAY, check_nested, describe_error, unpackb
from lancequeue.common.errors import RecordRejected

_BIN_SIZES = {b"\xc4": ">B", b"\xc5": ">H", b"\xc6": ">I"}
"""msgpack's bin 8/16/32 markers and the format of the size after them."""

Columns = dict[str, Any]
"""Column name → a list of values, or a numpy array whose first dimension is the record."""


def encode_columns(records: list[bytes]) -> bytes:
    """The ``cols`` value of an entry of ``records``, each one encoded by ``encode_record``."""
    rows: list[dict[str, Any]] = [
        msgpack.unpackb(data, raw=False, timestamp=0, strict_map_key=True) for data in records
    ]
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row))
    body: dict[str, Any] = {}
    for name in names:
        values = [row.get(name) for row in rows]
        stacked = _stacked(values)
        body[name] = values if stacked is None else stacked
    packed: bytes = msgpack.packb(body, use_bin_type=True, datetime=False)
    return packed


def _stacked(values: list[Any]) -> msgpack.ExtType | None:
    """One extension-2 array of shape ``[n, *shape]`` holding ``values`` if every one is an
    array of the same dtype and shape (as ``encode_record`` packed them), else None."""
    first = values[0]
    if not (isinstance(first, msgpack.ExtType) and first.code == EXT_NDARRAY):
        return None
    head = _array_head(first.data)
    if head is None:
        return None
    dtype, shape, offset = head
    parts = []
    for value in values:
        if not (isinstance(value, msgpack.ExtType) and value.code == EXT_NDARRAY):
            return None
        if value.data[:offset] != first.data[:offset] or len(value.data) != len(first.data):
            return None
        parts.append(value.data[offset:])
    data = b"".join(parts)
    payload = msgpack.packb([dtype, [len(values), *shape], data], use_bin_type=True)
    return msgpack.ExtType(EXT_NDARRAY, payload)


def _array_head(payload: bytes) -> tuple[str, list[int], int] | None:
    """An array extension's dtype, shape and where its data starts (after the bin header)."""
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(payload)
    try:
        if unpacker.read_array_header() != 3:
            return None
        dtype, shape = unpacker.unpack(), unpacker.unpack()
        start = unpacker.tell()
    except Exception:  # not the shape encode_record gives: the column goes value by value
        return None
    if not isinstance(dtype, str) or not isinstance(shape, list):
        return None
    size_format = _BIN_SIZES.get(payload[start : start + 1])
    if size_format is None:
        return None
    offset = start + 1 + struct.calcsize(size_format)
    (size,) = struct.unpack(size_format, payload[start + 1 : offset])
    return (dtype, shape, offset) if offset + size == len(payload) else None


def decode_columns(data: bytes, count: int) -> tuple[Columns, dict[int, str]]:
    """The columns of an entry of ``count`` records, and the records (by position) whose
    values cannot be taken, with why. Raises ``RecordRejected`` if the body as a whole cannot
    be read (every record of the entry is then rejected)."""
    try:
        body = unpackb(data)
    except Exception as exc:  # msgpack and the extension decoders raise several types
        raise RecordRejected(f"columnar entry: undecodable 'cols': {describe_error(exc)}") from exc
    if not isinstance(body, dict):
        kind = type(body).__name__
        raise RecordRejected(f"columnar entry: 'cols' must be a msgpack map, not {kind}")
    problems: dict[int, str] = {}
    for name, column in body.items():
        if not isinstance(name, str):
            raise RecordRejected(f"columnar entry: column names must be strings: {name!r:.80}")
        if isinstance(column, list):
            if len(column) != count:
                raise RecordRejected(
                    f"columnar entry: column {name!r:.80} holds {len(column)} values for "
                    f"{count} records"
                )
            _check_values(name, column, problems)
        elif getattr(column, "ndim", 0) >= 1:
            if column.shape[0] != count:
                raise RecordRejected(
                    f"columnar entry: column {name!r:.80} is an array of {column.shape[0]} rows "
                    f"for {count} records"
                )
        else:
            raise RecordRejected(
                f"columnar entry: column {name!r:.80} must be an array of values or an "
                f"extension-2 array of one row per record"
            )
    return body, problems


def _check_values(name: str, column: list[Any], problems: dict[int, str]) -> None:
    """Record by record, what ``decode_record`` checks of nested values (depth, map keys,
    timestamps), converting timestamps in place."""
    for position, value in enumerate(column):
        if type(value) not in (dict, list, msgpack.Timestamp):
            continue
        holder = {name: value}
        problem = check_nested(holder)
        if problem is not None:
            problems.setdefault(position, problem)
        column[position] = holder[name]
