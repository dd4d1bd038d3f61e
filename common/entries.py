"""Stream entries, what producers send the writer: the fields of each kind of entry, in the order
the enqueue script takes them, and the rules by which an entry's fields are read (the format is
in ``protocol``'s docstring and PROTOCOL.md)."""

from __future__ import annotations

import re

import msgpack

from lancequeue.common.codec import packb
from lancequeue.common.protocol import (
    DELETE_VERSION,
    FIELD_AT,
    FIELD_COLUMNS,
    FIELD_COUNT,
    FIELD_DELETE,
    FIELD_RECORD,
    FIELD_RECORDS,
    FIELD_REPLY,
    FIELD_SEQ,
    FIELD_TTL,
    FIELD_VERSION,
    MAX_PACKED_RECORDS,
    MAX_SEQ,
    PROTOCOL_VERSION,
)
from lancequeue.common.stream_ids import id_ms

_COUNT = re.compile(rb"[1-9][0-9]{0,4}")
_RECORDS_LEFT_OUT = re.compile(rb"(?:^|, )(?:recs|cols) [0-9]+(?:,|$)")

OVERSIZED = b"lq:oversized"
"""Field the writer's reads put in an entry in place of fields over its limits, which they leave
in Redis: what was left out, as ``<field> <bytes>`` items separated by ``, ``."""

INBOX_ELEMENT = "<at>:<length>,<length>,...;<field><value><field><value>..."
"""An inbox element: ``at``, the Redis time (ms) of the push (empty if unknown), then the byte
lengths of the entry's field names and values, then those, concatenated."""


def entry_fields(
    reply_key: str, seq: int, record: bytes, ttl_ms: int, version: bytes = PROTOCOL_VERSION
) -> list[bytes | str]:
    """The field/value pairs of one stream entry, in the order the enqueue script takes them.

    ``ttl_ms`` is how long the record may still wait: the writer drops it (answering
    ``WriteTimeout``) if its batch is built later than that after the entry was added.
    """
    return [
        FIELD_VERSION,
        version,
        FIELD_REPLY,
        reply_key,
        FIELD_SEQ,
        str(seq),
        FIELD_TTL,
        str(max(0, int(ttl_ms))),
        FIELD_RECORD,
        record,
    ]


def delete_entry_fields(
    reply_key: str,
    seq: int,
    key: bytes,
    ttl_ms: int,
    packed: bool = False,
    version: bytes = DELETE_VERSION,
) -> list[bytes | str]:
    """The field/value pairs of one delete entry (version 4, or 5 with its ``nonce`` to follow):
    delete the rows whose key columns hold the values of ``key`` (an encoded map). ``packed``: in
    the shape of a packed entry (``n`` "1" before it), to go in one enqueue call with packed or
    columnar entries."""
    fields = entry_fields(reply_key, seq, b"", ttl_ms, version)[:-2]  # all but "rec"
    if packed:
        fields += [FIELD_COUNT, "1"]
    return [*fields, FIELD_DELETE, key]


def packed_entry_fields(
    reply_key: str, first_seq: int, records: list[bytes], ttl_ms: int
) -> list[bytes | str]:
    """The field/value pairs of one packed stream entry: ``records`` (encoded) with sequence
    numbers ``first_seq``, ``first_seq + 1``, ... in the order the enqueue script takes them."""
    fields = entry_fields(reply_key, first_seq, b"", ttl_ms)[:-2]  # all but "rec"
    return [*fields, FIELD_COUNT, str(len(records)), FIELD_RECORDS, packb(records)]


def columnar_entry_fields(
    reply_key: str,
    first_seq: int,
    count: int,
    columns: bytes,
    ttl_ms: int,
    version: bytes = PROTOCOL_VERSION,
) -> list[bytes | str]:
    """The field/value pairs of one columnar stream entry of ``count`` records (sequence numbers
    ``first_seq`` on) whose ``cols`` value is ``columns`` (``columns.encode_columns``)."""
    fields = entry_fields(reply_key, first_seq, b"", ttl_ms, version)[:-2]  # all but "rec"
    return [*fields, FIELD_COUNT, str(count), FIELD_COLUMNS, columns]


def record_count(fields: dict[bytes, bytes] | None) -> int:
    """How many records an entry carries: a packed or columnar entry's ``n`` (``recs`` or
    ``cols`` and no ``rec``, ``n``
    in canonical decimal, at most ``MAX_PACKED_RECORDS``), else 1. The inbox move counts entries
    by the same rule."""
    fields = fields or {}
    raw = fields.get(FIELD_COUNT)
    packed = (
        FIELD_RECORDS in fields
        or FIELD_COLUMNS in fields
        or _RECORDS_LEFT_OUT.search(fields.get(OVERSIZED, b""))
    )
    if raw is None or not packed or FIELD_RECORD in fields:
        return 1
    if not _COUNT.fullmatch(raw):
        return 1
    return min(int(raw), MAX_PACKED_RECORDS)


def arrived_ms(entry_id: bytes, fields: dict[bytes, bytes] | None) -> int:
    """When the entry was queued, in Redis time (ms): the time of its push (``at``, which the
    writer adds as it moves the entry from the inbox), or its id's time if that is earlier or
    the entry has none (added to the stream directly). Never later than the id: no value in the
    entry moves its deadline past the writer's own clock."""
    arrived = id_ms(entry_id)
    at = (fields or {}).get(FIELD_AT)
    if at is None or not at.isdigit() or len(at) > 15:
        return arrived
    return min(int(at), arrived)


def unpack_records(packed: bytes, count: int) -> list[bytes] | str:
    """The encoded records of a packed entry, or why they cannot be had."""
    try:
        records = msgpack.unpackb(packed, raw=False, max_array_len=MAX_PACKED_RECORDS)
    except Exception as exc:  # msgpack raises several unrelated types on malformed input
        return f"packed entry: 'recs' is not a msgpack array ({type(exc).__name__})"
    if not isinstance(records, list) or not all(isinstance(r, bytes) for r in records):
        return "packed entry: 'recs' must be a msgpack array of bin (encoded records)"
    if len(records) != count:
        return f"packed entry: 'n' is {count} but 'recs' holds {len(records)} records"
    return records


def parse_seq(fields: dict[bytes, bytes]) -> int | None:
    """The entry's sequence number, or None unless it is a decimal up to ``MAX_SEQ``."""
    raw = fields.get(FIELD_SEQ)
    if raw is None or not raw.isdigit() or len(raw) > 16:
        return None
    seq = int(raw)
    return seq if seq <= MAX_SEQ else None
