"""The msgpack codec records travel in (PROTOCOL.md, "Record encoding").

Round-trips str, int, float, bool, None, bytes, lists, dicts, ``datetime``, ``date`` and numpy
arrays.
Arrays travel as raw little-endian bytes with their dtype and shape (ext type 2), never as lists
of Python floats. numpy is imported only when an array is actually decoded, so a producer that
sends no arrays never loads it. Nothing is ever unpickled or evaluated: only numeric dtypes are
accepted.
"""

from __future__ import annotations

import re
import struct
import sys
import threading
from collections.abc import Mapping
from datetime import date, datetime, timedelta
from typing import Any

import msgpack

from lancequeue.common.errors import RecordRejected

EXT_NAIVE_DATETIME = 1
"""Naive datetime: big-endian int64 microseconds since 1970-01-01T00:00:00 (no zone)."""
EXT_NDARRAY = 2
"""numpy array: a msgpack array ``[dtype, shape, data]``; dtype as numpy's ``dtype.str``."""
EXT_DATE = 3
"""Calendar date: big-endian int32 days since 1970-01-01."""

_EPOCH = datetime(1970, 1, 1)
_EPOCH_DATE = date(1970, 1, 1)
_DTYPE = re.compile(r"^(\|b1|\|i1|\|u1|<i2|<i4|<i8|<u2|<u4|<u8|<f2|<f4|<f8|<c8|<c16)$")


def _default(obj: object) -> object:
    if isinstance(obj, datetime):
        if obj.tzinfo is None:
            micros = (obj - _EPOCH) // timedelta(microseconds=1)
            return msgpack.ExtType(EXT_NAIVE_DATETIME, struct.pack(">q", micros))
        return msgpack.Timestamp.from_datetime(obj)
    if isinstance(obj, date):
        return msgpack.ExtType(EXT_DATE, struct.pack(">i", (obj - _EPOCH_DATE).days))
    np = sys.modules.get("numpy")
    if np is not None:
        if isinstance(obj, np.ndarray):
            return _pack_ndarray(np, obj)
        if isinstance(obj, np.generic):
            return obj.item()
    if isinstance(obj, tuple):
        return list(obj)
    if isinstance(obj, int):
        raise OverflowError(f"integer {obj} does not fit in 64 bits")
    raise TypeError(f"cannot encode a value of type {type(obj).__name__}")


def _pack_ndarray(np: Any, array: Any) -> msgpack.ExtType:
    if array.dtype.kind not in "biufc":
        raise TypeError(f"cannot encode a numpy array of dtype {array.dtype}")
    little = array.dtype.newbyteorder("<")
    data = np.ascontiguousarray(array, dtype=little).tobytes()
    key = (little.str, array.shape)
    head = _ARRAY_HEADS.get(key)
    if head is None:  # [dtype, shape, data]: all but the data, packed once per dtype and shape
        packed = msgpack.packb([little.str, list(array.shape), b""], use_bin_type=True)
        head = packed[:-2]  # less the empty bin (0xc4 0x00)
        if len(_ARRAY_HEADS) < _KNOWN_SHAPES:
            _ARRAY_HEADS[key] = head
    return msgpack.ExtType(EXT_NDARRAY, head + bin_header(len(data)) + data)


_ARRAY_HEADS: dict[tuple[str, tuple[int, ...]], bytes] = {}


def pack_array(array: Any) -> tuple[bytes, tuple[str, tuple[int, ...]]]:
    """A numpy array encoded as ``packb`` encodes it (extension 2), and its dtype as sent and
    shape; without the copies of the general path (the header before the data is made once
    per dtype and shape)."""
    # Keyed by the dtype itself: its ``str`` is made anew at each reading.
    key = (array.dtype, array.shape)
    known = _ARRAY_PREFIXES.get(key)
    if known is None:
        if array.dtype.kind not in "biufc":
            raise TypeError(f"cannot encode a numpy array of dtype {array.dtype}")
        little = array.dtype.newbyteorder("<")
        head = msgpack.packb([little.str, list(array.shape), b""], use_bin_type=True)[:-2]
        size = array.size * array.dtype.itemsize
        payload = len(head) + len(bin_header(size)) + size
        prefix = ext_header(EXT_NDARRAY, payload) + head + bin_header(size)
        known = (prefix, (little.str, array.shape))
        if len(_ARRAY_PREFIXES) < _KNOWN_SHAPES:
            _ARRAY_PREFIXES[key] = known
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    return known[0] + array.tobytes(), known[1]


_ARRAY_PREFIXES: dict[tuple[Any, tuple[int, ...]], tuple[bytes, tuple[str, tuple[int, ...]]]] = {}
_KNOWN_SHAPES = 1024
"""Most dtypes and shapes whose headers are kept (arrays of ever new lengths must not grow the
caches without bound)."""


def ext_header(code: int, size: int) -> bytes:
    """msgpack's header of an extension value of ``size`` bytes (the smallest form, as msgpack's
    own packer writes it)."""
    fixed = _FIXEXT.get(size)
    if fixed is not None:
        return struct.pack(">Bb", fixed, code)
    if size < 0x100:
        return struct.pack(">BBb", 0xC7, size, code)
    if size < 0x10000:
        return struct.pack(">BHb", 0xC8, size, code)
    return struct.pack(">BIb", 0xC9, size, code)


_FIXEXT = {1: 0xD4, 2: 0xD5, 4: 0xD6, 8: 0xD7, 16: 0xD8}


def bin_header(size: int) -> bytes:
    """msgpack's bin 8/16/32 header for ``size`` bytes."""
    if size < 0x100:
        return struct.pack(">BB", 0xC4, size)
    if size < 0x10000:
        return struct.pack(">BH", 0xC5, size)
    return struct.pack(">BI", 0xC6, size)


def _ext_hook(code: int, data: bytes) -> object:
    if code == EXT_NAIVE_DATETIME:
        if len(data) != 8:
            raise ValueError("naive datetime extension must be 8 bytes")
        (micros,) = struct.unpack(">q", data)
        return _EPOCH + timedelta(microseconds=micros)
    if code == EXT_NDARRAY:
        return _unpack_ndarray(data)
    if code == EXT_DATE:
        if len(data) != 4:
            raise ValueError("date extension must be 4 bytes")
        return _EPOCH_DATE + timedelta(days=struct.unpack(">i", data)[0])
    raise ValueError(f"unknown msgpack extension type {code}")


def _unpack_ndarray(payload: bytes) -> object:
    try:
        parts = msgpack.unpackb(payload, raw=False)
    except Exception as exc:  # msgpack raises several types on malformed input
        raise ValueError(f"array extension payload is not msgpack ({_describe(exc)})") from exc
    if not (isinstance(parts, list) and len(parts) == 3):
        raise ValueError("array extension must hold [dtype, shape, data]")
    dtype_str, shape, data = parts
    dtype = _dtype(dtype_str)
    if not (isinstance(shape, list) and all(type(n) is int and n >= 0 for n in shape)):
        raise ValueError("array shape must be a list of non-negative integers")
    if not isinstance(data, bytes):
        raise ValueError("array data must be bytes")
    import numpy as np

    count = 1
    for n in shape:
        count *= n
    if count * dtype.itemsize != len(data):
        raise ValueError(
            f"array data is {len(data)} bytes, shape {shape} of {dtype_str} needs "
            f"{count * dtype.itemsize}"
        )
    return np.frombuffer(data, dtype=dtype).reshape(shape)


def readable_dtype(dtype_str: str) -> bool:
    """Whether an array of this dtype (numpy's ``dtype.str``) decodes (only numeric ones)."""
    return bool(_DTYPE.match(dtype_str))


_DTYPES: dict[str, Any] = {}


def _dtype(dtype_str: object) -> Any:
    """The numpy dtype of an array extension's dtype string (only numeric ones)."""
    if isinstance(dtype_str, str):
        known = _DTYPES.get(dtype_str)
        if known is not None:
            return known
        if _DTYPE.match(dtype_str):
            import numpy as np

            _DTYPES[dtype_str] = np.dtype(dtype_str)
            return _DTYPES[dtype_str]
    raise ValueError(f"unsupported array dtype {dtype_str!r}")


def packer() -> msgpack.Packer:
    """This thread's packer (making one allocates its buffer; a Packer is not shared)."""
    made: msgpack.Packer | None = getattr(_packers, "packer", None)
    if made is None:
        made = _packers.packer = msgpack.Packer(default=_default, use_bin_type=True, datetime=False)
    return made


def packb(obj: object) -> bytes:
    """Encode any supported value (replies and other protocol messages)."""
    packed: bytes = packer().pack(obj)  # on an error, it resets itself
    return packed


_packers = threading.local()


def unpackb_tolerant(data: bytes) -> Any:
    """``unpackb``, except that an extension value that cannot be decoded becomes an
    ``Unreadable`` holding why, and map keys of any type are kept (``check_nested`` names
    them): one bad value does not make its neighbours unreadable."""
    return msgpack.unpackb(
        data, raw=False, ext_hook=_tolerant_hook, timestamp=0, strict_map_key=False
    )


class Unreadable:
    """An extension value that could not be decoded, and why."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _tolerant_hook(code: int, data: bytes) -> object:
    try:
        return _ext_hook(code, data)
    except ValueError as exc:
        return Unreadable(str(exc))


def unpackb(data: bytes) -> Any:
    """Decode bytes made by :func:`packb` or any msgpack encoder following PROTOCOL.md."""
    return msgpack.unpackb(data, raw=False, ext_hook=_ext_hook, timestamp=0, strict_map_key=True)


def encode_record(record: Mapping[str, Any]) -> bytes:
    """Encode one record (a mapping of column name to value).

    Raises :class:`RecordRejected` naming the field whose value cannot be encoded.
    """
    if not isinstance(record, Mapping):
        raise RecordRejected(f"a record must be a mapping, not {type(record).__name__}")
    for name in record:
        if not isinstance(name, str):
            raise RecordRejected(f"field names must be str, got {name!r}")
    try:
        return packb(dict(record))
    except (TypeError, ValueError, OverflowError) as exc:
        raise RecordRejected(_name_bad_field(record, exc)) from exc


def _name_bad_field(record: Mapping[str, Any], exc: Exception) -> str:
    for name, value in record.items():
        try:
            packb(value)
        except (TypeError, ValueError, OverflowError) as field_exc:
            return f"field {name!r}: {field_exc}"
    return str(exc)


def decode_record(data: bytes) -> dict[str, Any]:
    """Decode one record; raises :class:`RecordRejected` saying why it cannot be read."""
    try:
        record = unpackb(data)
    except Exception as exc:  # msgpack raises several unrelated types on malformed input
        raise RecordRejected(f"undecodable record: {_describe(exc)}") from exc
    if not isinstance(record, dict):
        raise RecordRejected(f"a record must be a msgpack map, got {type(record).__name__}")
    for name in record:
        if not isinstance(name, str):
            raise RecordRejected(f"field names must be strings, got {name!r:.80}")
    if any(type(value) in _NESTED for value in record.values()):
        problem = _walk(record)
        if problem is not None:
            raise RecordRejected(problem)
    return record


_NESTED = (dict, list, msgpack.Timestamp)
"""Values ``_walk`` looks into (or converts); a record holding none of them is left as is."""


MAX_NESTING = 32
"""Deepest nesting of lists and maps a record may have."""


def _walk(record: dict[str, Any]) -> str | None:
    """Turn timestamps into datetimes in place; say why the record cannot be taken if its lists
    and maps nest too deep, a nested map has a key that is not a string, or a timestamp has
    nanoseconds (a datetime holds microseconds, and nothing is truncated)."""
    stack: list[tuple[str, Any, int]] = [("", record, 0)]
    while stack:
        name, container, depth = stack.pop()
        if depth > MAX_NESTING:
            return f"field {name!r:.80}: lists and maps nest deeper than {MAX_NESTING} levels"
        if isinstance(container, dict):
            for key in container:
                if not isinstance(key, str):
                    return f"field {name!r:.80}: map keys must be strings, got {key!r:.80}"
            slots: Any = container.items()
        else:
            slots = enumerate(container)
        for slot, value in list(slots):
            field = name or str(slot)
            if isinstance(value, Unreadable):
                return f"field {field!r:.80}: {value.reason}"
            if isinstance(value, msgpack.Timestamp):
                if value.nanoseconds % 1000:
                    return (
                        f"field {field!r:.80}: timestamp with nanoseconds; only microseconds "
                        "are kept, and nothing is truncated"
                    )
                try:
                    container[slot] = value.to_datetime()
                except (OverflowError, ValueError, OSError) as exc:
                    return f"field {field!r:.80}: timestamp out of range ({exc})"
            elif isinstance(value, (dict, list)):
                stack.append((field, value, depth + 1))
    return None


def check_nested(record: dict[str, Any]) -> str | None:
    """Why ``record``'s nested values cannot be taken (depth, map keys, timestamps), or None;
    timestamps become datetimes in place (``decode_record``'s checks)."""
    return _walk(record)


def describe_error(exc: BaseException) -> str:
    """A decoding error as text that always says something."""
    return _describe(exc)


def _describe(exc: BaseException) -> str:
    """An exception as text that always says something (msgpack's often have no message)."""
    if isinstance(exc, msgpack.StackError):
        return "lists and maps nest deeper than msgpack's limit"
    if isinstance(exc, msgpack.FormatError):
        return "malformed msgpack: a reserved type byte (0xc1)"
    message = str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__
