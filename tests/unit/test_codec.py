"""The msgpack codec records travel in."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import msgpack
import numpy as np
import pytest

from lancequeue.common import codec
from lancequeue.common.codec import EXT_NDARRAY, decode_record, encode_record, packb, unpackb
from lancequeue.common.errors import RecordRejected


def test_plain_values_round_trip() -> None:
    record = {
        "s": "héllo",
        "i": -(2**40),
        "f": 1.5,
        "t": True,
        "n": None,
        "b": b"\x00\xff",
        "l": [1, "two", [3.0]],
        "d": {"nested": {"deep": [None]}},
    }
    assert decode_record(encode_record(record)) == record


def test_naive_and_aware_datetimes_round_trip() -> None:
    naive = datetime(2026, 11, 28, 1, 2, 3, 456789)
    aware = datetime(2026, 11, 28, 1, 2, 3, 456789, tzinfo=timezone(timedelta(hours=5)))
    decoded = decode_record(encode_record({"naive": naive, "aware": aware}))
    assert decoded["naive"] == naive and decoded["naive"].tzinfo is None
    assert decoded["aware"] == aware and decoded["aware"].tzinfo is not None


def test_dates_round_trip_as_dates() -> None:
    decoded = decode_record(encode_record({"day": date(1969, 12, 31), "d2": date(2026, 11, 28)}))
    assert decoded == {"day": date(1969, 12, 31), "d2": date(2026, 11, 28)}
    assert type(decoded["day"]) is date


def test_datetimes_before_1970_round_trip() -> None:
    old = datetime(1901, 1, 1, 0, 0, 0, 1)
    assert decode_record(encode_record({"when": old}))["when"] == old


@pytest.mark.parametrize("dtype", ["<f4", ">f4", "<f8", "<i8", "<u2", "|b1", "<c8"])
def test_numpy_arrays_round_trip_with_dtype_and_shape(dtype: str) -> None:
    array = (np.arange(12) % 3).astype(dtype).reshape(3, 4)
    decoded = decode_record(encode_record({"a": array}))["a"]
    assert decoded.shape == (3, 4)
    assert decoded.dtype == np.dtype(dtype).newbyteorder("<")
    assert np.array_equal(decoded, array)


def test_float32_vectors_travel_as_raw_little_endian_bytes() -> None:
    vector = np.linspace(0, 1, 384, dtype=np.float32)
    encoded = encode_record({"vector": vector})
    # 384 float32 = 1,536 bytes of payload plus a few bytes of framing, not 384 msgpack floats.
    assert len(encoded) < 1536 + 40
    assert vector.astype("<f4").tobytes() in encoded
    ext = msgpack.unpackb(encoded, raw=False)["vector"]
    assert ext.code == EXT_NDARRAY


def test_numpy_scalars_become_plain_numbers() -> None:
    assert decode_record(encode_record({"x": np.float32(0.5), "n": np.int64(7)})) == {
        "x": 0.5,
        "n": 7,
    }


def test_unencodable_value_is_rejected_naming_the_field() -> None:
    with pytest.raises(RecordRejected, match="field 'when': cannot encode a value of type set"):
        encode_record({"ok": 1, "when": {1, 2}})


def test_object_arrays_are_refused_rather_than_pickled() -> None:
    with pytest.raises(RecordRejected, match="field 'objs'"):
        encode_record({"objs": np.array([object()], dtype=object)})


def test_a_record_must_be_a_mapping_with_string_keys() -> None:
    with pytest.raises(RecordRejected, match="mapping"):
        encode_record([1, 2])  # type: ignore[arg-type]
    with pytest.raises(RecordRejected, match="field names must be str"):
        encode_record({1: "x"})  # type: ignore[dict-item]


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"\xc1", "undecodable"),
        (b"\x92\x01", "undecodable"),
        (packb([1, 2]), "must be a msgpack map"),
        (
            msgpack.packb({"a": msgpack.ExtType(2, msgpack.packb(["|O8", [1], b"x" * 8]))}),
            "unsupported array dtype",
        ),
        (
            msgpack.packb({"a": msgpack.ExtType(2, msgpack.packb(["<f4", [4], b"x" * 3]))}),
            "array data is 3 bytes",
        ),
        (msgpack.packb({"a": msgpack.ExtType(99, b"")}), "unknown msgpack extension type 99"),
    ],
)
def test_malformed_bytes_are_rejected_with_the_reason(data: bytes, reason: str) -> None:
    with pytest.raises(RecordRejected, match=reason):
        decode_record(data)


def test_deeply_nested_input_is_rejected_not_crashing() -> None:
    data = b"\x91" * 100_000 + b"\xc0"
    with pytest.raises(RecordRejected):
        decode_record(data)


def test_protocol_messages_round_trip() -> None:
    assert unpackb(packb([[1, None], [2, {"error": "WriteFailed"}]])) == [
        [1, None],
        [2, {"error": "WriteFailed"}],
    ]


@pytest.mark.parametrize("dtype", ["<f4", ">f4"])
def test_arrays_of_ever_new_lengths_encode_as_packb_does_and_grow_no_cache(dtype: str) -> None:
    for length in range(1, 3 * codec._KNOWN_SHAPES):
        array = np.arange(length, dtype=dtype)
        encoded, layout = codec.pack_array(array)
        assert encoded == packb(array)
        assert layout == ("<f4", (length,))
    assert len(codec._ARRAY_PREFIXES) <= codec._KNOWN_SHAPES
    assert len(codec._ARRAY_HEADS) <= codec._KNOWN_SHAPES
