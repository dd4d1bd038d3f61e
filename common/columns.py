"""Columnar entries: many records in one stream entry, column by column (PROTOCOL.md, "Columnar
entries").

An entry's ``cols`` field is a msgpack map of column name to the column: a msgpack array of one
value per record (nil: the record has no value there), or, where every record holds an array of
one dtype and shape, one extension-2 array of shape ``[n, *shape]``: the vectors of a column as
one contiguous buffer, read by the writer without a Python object per record.

A producer encodes each record field by field as it is enqueued (``encode_fields``): what it
sends is what it validated then, whatever the caller did to the record since. A send joins those
bytes into single-record entries or into a columnar body (``encode_columns``): nothing is
encoded twice.
"""

from __future__ import annotations

import functools
import struct
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

from lancequeue.common.codec import (
    EXT_NDARRAY,
    Unreadable,
    bin_header,
    check_nested,
    describe_error,
    ext_header,
    pack_array,
    packer,
    readable_dtype,
    unpackb_tolerant,
)
from lancequeue.common.errors import RecordRejected

Columns = dict[str, Any]
"""Column name → a list of values, or a numpy array whose first dimension is the record."""


@dataclass(slots=True)
class EncodedRecord:
    """A record encoded field by field (each value as ``encode_record`` encodes it): what a
    producer holds between ``enqueue`` and the send, so it can send it alone or column by
    column without encoding it again."""

    names: tuple[str, ...]
    values: tuple[bytes, ...]
    """Each field's value, msgpack-encoded."""
    arrays: tuple[tuple[str, tuple[int, ...]] | None, ...]
    """For a value that is a numeric array: its dtype (as sent) and shape; its raw data ends
    its encoding. None for any other value."""
    size: int
    """The size of the whole record encoded (``encoded()``)."""

    def encoded(self) -> bytes:
        """The record as one msgpack map: exactly ``encode_record``'s bytes."""
        parts = [_map_header(len(self.names))]
        for name, value in zip(self.names, self.values, strict=True):
            parts += [_name(name), value]
        return b"".join(parts)


EMPTY = EncodedRecord((), (), (), 0)
"""What a record sent and confirmed is replaced with (it is never sent again)."""


def encode_fields(record: Mapping[str, Any]) -> EncodedRecord:
    """Encode ``record`` field by field. Raises ``RecordRejected`` naming a field whose value
    cannot be encoded (as ``encode_record`` does)."""
    if type(record) is not dict and not isinstance(record, Mapping):
        raise RecordRejected(f"a record must be a mapping, not {type(record).__name__}")
    names = tuple(record)
    try:
        layout = _LAYOUTS.get(names)
    except TypeError:  # an unhashable key of a Mapping: ``_layout`` refuses it by name
        layout = None
    if layout is None:
        layout = _layout(names)
    names, size = layout
    values: list[bytes] = []
    arrays: list[tuple[str, tuple[int, ...]] | None] | None = None
    numpy = sys.modules.get("numpy")
    ndarray = numpy.ndarray if numpy is not None else None
    pack = packer().pack
    for position, value in enumerate(record.values()):
        try:
            if type(value) is ndarray:
                encoded, array = pack_array(value)
                if arrays is None:
                    arrays = [None] * len(names)
                arrays[position] = array
            else:
                encoded = pack(value)
        except (TypeError, ValueError, OverflowError) as exc:
            raise RecordRejected(f"field {names[position]!r}: {exc}") from exc
        values.append(encoded)
        size += len(encoded)
    if arrays is None:
        held = _NO_ARRAYS.get(len(names)) or (None,) * len(names)
    else:
        held = _shared(tuple(arrays))
    return EncodedRecord(names, tuple(values), held, size)


def _layout(names: tuple[Any, ...]) -> tuple[tuple[str, ...], int]:
    """The field names of records of these fields (one tuple shared by them all) and their
    encoded size less the values'; checked and kept (a bounded number of them)."""
    size = len(_map_header(len(names)))
    for name in names:
        if not isinstance(name, str):
            raise RecordRejected(f"field names must be str, got {name!r}")
        try:
            size += len(_name(name))
        except (TypeError, ValueError, OverflowError) as exc:
            raise RecordRejected(f"field {name!r}: {exc}") from exc
    layout = (names, size)
    if len(_LAYOUTS) < _SHARED_MAX:
        _LAYOUTS[names] = layout
    return layout


_LAYOUTS: dict[tuple[Any, ...], tuple[tuple[str, ...], int]] = {}
_NO_ARRAYS = {count: (None,) * count for count in range(64)}
"""The array layout of a record of ``count`` fields holding no array."""


def _shared(made: tuple[Any, ...]) -> tuple[Any, ...]:
    """One tuple for each array layout seen (records alike hold the same one, not a copy each:
    fewer objects for the garbage collector); a bounded number of them."""
    known = _SHARED.get(made)
    if known is not None:
        return known
    if len(_SHARED) < _SHARED_MAX:
        _SHARED[made] = made
    return made


_SHARED: dict[tuple[Any, ...], tuple[Any, ...]] = {}
_SHARED_MAX = 4096


def encode_columns(records: Sequence[EncodedRecord]) -> bytes:
    """The ``cols`` value of an entry of ``records``: each column a msgpack array of the
    records' values (nil where one has none), or, where every record holds an array of one
    dtype and shape, one extension-2 array of shape ``[n, *shape]``. Only joins bytes."""
    count = len(records)
    names, columns = _columns(records)
    parts: list[bytes | memoryview] = [_map_header(len(names))]
    for name, (values, arrays) in zip(names, columns, strict=True):
        parts.append(_name(name))
        kinds = set(arrays)
        kind = kinds.pop() if len(kinds) == 1 else None
        # One array of rows of one or more dimensions, of a dtype every writer decodes (else
        # value by value: a value that does not decode is its own record's problem alone).
        stacked = kind is not None and bool(kind[1]) and readable_dtype(kind[0])
        nbytes = _nbytes(*kind) if stacked and kind is not None else 0
        if kind is not None and nbytes:
            dtype, shape = kind
            head = msgpack.packb([dtype, [count, *shape]], use_bin_type=True)[1:]
            data_header = bin_header(nbytes * count)
            size = len(_ARRAY_OF_3) + len(head) + len(data_header) + nbytes * count
            parts += [ext_header(EXT_NDARRAY, size), _ARRAY_OF_3, head, data_header]
            # Each row's data as a view, joined once with the rest: no copy of the rows
            # before the body's own (slices and a join of their own cost 7 times as much).
            parts += [memoryview(value)[-nbytes:] for value in values if value is not None]
        else:
            parts.append(_array_header(count))
            parts += [_NIL if value is None else value for value in values]
    return b"".join(parts)


Column = tuple[list[bytes | None], list[tuple[str, tuple[int, ...]] | None]]
"""A column's encoded values and array layouts, one per record (None where it has none)."""


def _columns(records: Sequence[EncodedRecord]) -> tuple[list[str], list[Column]]:
    """The names of the entry's columns (the first record's order, then any others' as they
    come) and each column's values and array layouts, record by record."""
    first = records[0].names
    if all(record.names == first for record in records):  # the usual case: one layout
        return list(first), [
            ([record.values[i] for record in records], [record.arrays[i] for record in records])
            for i in range(len(first))
        ]
    names = list(dict.fromkeys(name for record in records for name in record.names))
    columns: list[Column] = [([], []) for _ in names]
    for record in records:
        index = {name: i for i, name in enumerate(record.names)}
        for name, (values, arrays) in zip(names, columns, strict=True):
            at = index.get(name)
            values.append(None if at is None else record.values[at])
            arrays.append(None if at is None else record.arrays[at])
    return names, columns


def _nbytes(dtype: str, shape: tuple[int, ...]) -> int:
    count = 1
    for n in shape:
        count *= n
    return count * int(dtype[2:])


_NIL = b"\xc0"
_ARRAY_OF_3 = b"\x93"


@functools.lru_cache(maxsize=1024)
def _name(name: str) -> bytes:
    packed: bytes = msgpack.packb(name)
    return packed


def _map_header(count: int) -> bytes:
    if count < 16:
        return bytes([0x80 | count])
    return struct.pack(">BH", 0xDE, count) if count < 0x10000 else struct.pack(">BI", 0xDF, count)


def _array_header(count: int) -> bytes:
    if count < 16:
        return bytes([0x90 | count])
    return struct.pack(">BH", 0xDC, count) if count < 0x10000 else struct.pack(">BI", 0xDD, count)


def decode_columns(data: bytes, count: int) -> tuple[Columns, dict[int, str]]:
    """The columns of an entry of ``count`` records, and the records (by position) whose
    values cannot be taken, with why. Raises ``RecordRejected`` if the body as a whole cannot
    be read (every record of the entry is then rejected)."""
    try:
        body = unpackb_tolerant(data)
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
        elif isinstance(column, Unreadable):
            raise RecordRejected(f"columnar entry: column {name!r:.80}: {column.reason}")
        elif getattr(column, "ndim", 0) >= 2:
            if column.shape[0] != count:
                raise RecordRejected(
                    f"columnar entry: column {name!r:.80} is an array of {column.shape[0]} rows "
                    f"for {count} records"
                )
            if column.size == 0:  # n rows from a few bytes: each record's costs nothing to send
                raise RecordRejected(
                    f"columnar entry: column {name!r:.80} is an array of empty rows; send "
                    "empty arrays value by value"
                )
        else:
            raise RecordRejected(
                f"columnar entry: column {name!r:.80} must be an array of values or an "
                f"extension-2 array of two or more dimensions, one row per record"
            )
    return body, problems


def _check_values(name: str, column: list[Any], problems: dict[int, str]) -> None:
    """Record by record, what ``decode_record`` checks of nested values (depth, map keys,
    timestamps), converting timestamps in place."""
    if _NESTED.isdisjoint(map(type, column)):  # the usual column: scalars only, nothing to do
        return
    for position, value in enumerate(column):
        if type(value) not in _NESTED:
            continue
        holder = {name: value}
        problem = check_nested(holder)
        if problem is not None:
            problems.setdefault(position, problem)
        column[position] = holder[name]


_NESTED = frozenset((dict, list, msgpack.Timestamp, Unreadable))
"""The types of value ``_check_values`` looks into."""
