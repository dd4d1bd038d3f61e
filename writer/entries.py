"""Reading stream entries: who to answer, and the record or why it was rejected."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from typing import Any

from lancequeue.common.codec import decode_record
from lancequeue.common.columns import Columns, decode_columns
from lancequeue.common.entries import OVERSIZED, arrived_ms, parse_seq, record_count, unpack_records
from lancequeue.common.errors import RecordRejected
from lancequeue.common.keys import TableKeys
from lancequeue.common.protocol import (
    DELETE_VERSION,
    DELETE_VERSIONS,
    DIGEST_BYTES,
    FIELD_COLUMNS,
    FIELD_COUNT,
    FIELD_DELETE,
    FIELD_NONCE,
    FIELD_RECORD,
    FIELD_RECORDS,
    FIELD_REPLY,
    FIELD_SEQ,
    FIELD_TTL,
    FIELD_VERSION,
    MAX_PACKED_RECORDS,
    MAX_SEQ,
    NONCE_VERSION,
    PROTOCOL_VERSION,
    RANGED_VERSIONS,
    VERSIONS,
)
from lancequeue.common.replies import record_digest

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class ColumnBlock:
    """The records of one columnar entry, column by column (``common/columns.py``)."""

    columns: Columns
    count: int
    body: bytes = field(repr=False)
    """The entry's ``cols`` as sent: what an ok answer's digest is of, for each of its records."""
    version: bytes = PROTOCOL_VERSION
    """The entry's protocol version (it says how the digest is made)."""

    @functools.cached_property
    def digest(self) -> bytes:
        """What an ok answer carries for each of the entry's records (but for version 5, whose
        nonce it is: ``Entry.digest``)."""
        return record_digest(self.body, self.version)

    def row(self, position: int) -> dict[str, Any]:
        """Record ``position`` as a dict (a column with no value for it is left out)."""
        return {
            name: value
            for name, column in self.columns.items()
            if (value := column[position]) is not None
        }


@dataclass(slots=True)
class Entry:
    """One record of a stream entry as the writer sees it (a packed or columnar entry gives
    several).

    ``reply_key`` is None when the entry names no usable reply key: such an entry is acked and
    never answered. ``rejection`` is set when the record cannot go into the table.
    """

    entry_id: bytes
    """The stream entry's id (acked once all its records are settled)."""
    reply_key: str | None
    seq: int
    record: dict[str, Any] | None
    rejection: str | None = None
    deadline_ms: int | None = None
    """Redis server time (ms) after which the record must not be written; None: no deadline."""
    fields: dict[bytes, bytes] = field(default_factory=dict, repr=False)
    """The raw fields of a single-record entry (for a packed one, those it would have alone;
    for a columnar one, its entry's but ``n`` and ``cols``, shared), kept for the dead-letter
    stream."""
    part: int | None = None
    """The record's position in a packed or columnar entry; None for a single-record entry."""
    block: ColumnBlock | None = field(default=None, repr=False)
    """A columnar entry's records, this one at position ``part`` (``materialized()`` makes its
    dict); None otherwise (``record`` holds it)."""
    version: bytes = PROTOCOL_VERSION
    """The entry's protocol version: whether its producer reads answers in ranges
    (``ranged``), and how an ok answer's digest is made."""
    delete: bool = False
    """A delete by key (``del``): ``record`` holds the key, not a row."""

    @property
    def readable(self) -> bool:
        """Whether the record was read (it may still not fit the table)."""
        return self.rejection is None and (self.record is not None or self.block is not None)

    def materialized(self) -> dict[str, Any] | None:
        """The record as a dict (for a columnar entry's, made from its columns now)."""
        if self.block is not None and self.part is not None and self.rejection is None:
            return self.block.row(self.part)
        return self.record

    @property
    def digest(self) -> bytes:
        """What an ok answer carries: the entry's nonce (version 5), else the digest of the
        record as its producer encoded it, or of its columnar entry's ``cols``."""
        if self.version == NONCE_VERSION:
            return self.fields.get(FIELD_NONCE, b"")  # 8 bytes: checked as the entry was read
        if self.block is not None:
            return self.block.digest
        data = self.fields.get(FIELD_DELETE if self.delete else FIELD_RECORD, b"")
        return record_digest(data, self.version)

    record_id: str = field(init=False, repr=False)
    """Names the record in watermarks: the entry id, with ``#i`` for record i of a packed or
    columnar entry."""
    producer_id: str | None = field(init=False, repr=False)
    """The producer its reply key names (None with no reply key: see ``unanswerable``)."""
    ranged: bool = field(init=False, repr=False)
    """Its producer reads answers in ranges (its ``version`` is one of ``RANGED_VERSIONS``)."""

    def __post_init__(self) -> None:
        entry_id = self.entry_id.decode()
        self.record_id = entry_id if self.part is None else f"{entry_id}#{self.part}"
        reply_key = self.reply_key
        self.producer_id = None if reply_key is None else _producer_of(reply_key)
        self.ranged = self.version in RANGED_VERSIONS

    def unanswerable(self) -> None:
        """Never answer it (it is acked all the same)."""
        self.reply_key = self.producer_id = None


@functools.lru_cache(maxsize=4096)
def _producer_of(reply_key: str) -> str:
    """The producer id of a reply key (cached: a batch holds many records of few producers)."""
    return reply_key.rsplit(":", 1)[-1]


def read_entries(
    keys: TableKeys,
    entry_id: bytes,
    fields: dict[bytes, bytes],
    max_record_bytes: int | None = None,
) -> list[Entry]:
    """Decode one stream entry into its records (one, or those of a packed or columnar entry);
    never raises, whatever the entry holds. A record that cannot be read is rejected alone."""
    packed = fields.get(FIELD_RECORDS)
    columns = fields.get(FIELD_COLUMNS) if packed is None else None
    # A packed entry whose records a read left out (OVERSIZED) still says how many it held.
    left_out = OVERSIZED in fields and FIELD_COUNT in fields
    if (packed is None and columns is None and not left_out) or FIELD_RECORD in fields:
        return [read_entry(keys, entry_id, fields, max_record_bytes)]
    head = _head(keys, entry_id, fields)
    if FIELD_DELETE in fields:  # each of its sequence numbers gets this answer
        head.rejection = head.rejection or "entry carries both records and a delete ('del')"
    if head.rejection is None and OVERSIZED in fields:
        head.rejection = _oversized(fields[OVERSIZED], max_record_bytes)
    count_raw = fields.get(FIELD_COUNT)
    count = record_count(fields)
    if count_raw is None or str(count).encode() != count_raw:
        head.rejection = f"packed entry: invalid 'n' {count_raw!r:.40} (1 to {MAX_PACKED_RECORDS})"
        return [head]
    if head.seq + count - 1 > MAX_SEQ:
        logger.warning(
            "entry %s: sequence numbers past %d; it will not be answered", entry_id, MAX_SEQ
        )
        head.unanswerable()
    if columns is not None:
        return _columnar(head, count, columns, fields)
    parts = [_part(head, index, fields) for index in range(count)]
    records = head.rejection or unpack_records(packed or b"", count)
    if isinstance(records, str):
        for part in parts:
            part.rejection = records
        return parts
    for part, data in zip(parts, records, strict=True):
        part.fields[FIELD_RECORD] = data
        _decode_into(part, data, max_record_bytes)
    return parts


def read_entry(
    keys: TableKeys,
    entry_id: bytes,
    fields: dict[bytes, bytes],
    max_record_bytes: int | None = None,
) -> Entry:
    """Decode one single-record entry; never raises, whatever the entry holds."""
    entry = _head(keys, entry_id, fields)
    if entry.rejection is not None:
        return entry
    if OVERSIZED in fields:
        entry.rejection = _oversized(fields[OVERSIZED], max_record_bytes)
        return entry
    data = fields.get(FIELD_RECORD)
    key = fields.get(FIELD_DELETE)
    if key is not None:
        if data is not None:
            entry.rejection = "entry carries both a record and a delete ('del')"
        elif entry.version not in DELETE_VERSIONS:
            entry.rejection = (
                f"a delete ('del') needs protocol version {DELETE_VERSION.decode()} or more, "
                f"not {entry.version.decode()}"
            )
        else:
            entry.delete = True
            _decode_into(entry, key, max_record_bytes)
        return entry
    if data is None:
        entry.rejection = "entry has no 'rec' field"
        return entry
    _decode_into(entry, data, max_record_bytes)
    return entry


def _head(keys: TableKeys, entry_id: bytes, fields: dict[bytes, bytes]) -> Entry:
    """The entry's addressing (reply key, sequence number, deadline), without its record;
    ``rejection`` set if those fields are unusable."""
    reply_key = _reply_key(keys, entry_id, fields)
    seq = parse_seq(fields)
    if reply_key is not None and seq is None:
        logger.warning("entry %s: missing or invalid 'seq'; it will not be answered", entry_id)
        reply_key = None
    version = fields.get(FIELD_VERSION)
    known = version is not None and version in VERSIONS
    entry = Entry(
        entry_id,
        reply_key,
        seq or 0,
        None,
        fields=fields,
        version=version if version is not None and known else PROTOCOL_VERSION,
    )
    if not known:
        spoken = ", ".join(name.decode() for name in VERSIONS)
        entry.rejection = (
            f"unsupported protocol version {version!r:.40} (this writer speaks {spoken})"
        )
        return entry
    if entry.version == NONCE_VERSION:
        nonce = fields.get(FIELD_NONCE)
        if nonce is None or len(nonce) != DIGEST_BYTES:
            entry.rejection = (
                f"an entry of version {NONCE_VERSION.decode()} needs a 'nonce' of "
                f"{DIGEST_BYTES} bytes, not {nonce!r:.40}"
            )
            return entry
    ttl = fields.get(FIELD_TTL)
    if ttl is not None:
        if not ttl.isdigit() or len(ttl) > 15:
            entry.rejection = f"invalid 'ttl' {ttl!r:.40}: milliseconds as a decimal integer"
            return entry
        entry.deadline_ms = arrived_ms(entry_id, fields) + int(ttl)
    return entry


def _oversized(dropped: bytes, max_record_bytes: int | None) -> str:
    """Why an entry whose read left fields out (``OVERSIZED``) is rejected."""
    what = dropped.decode(errors="replace")[:200]
    name, _, size = what.partition(" ")
    if name in ("rec", "del") and size.isdigit() and max_record_bytes is not None:
        return (
            f"{'record' if name == 'rec' else 'key'} is {size} bytes encoded, over the "
            f"writer's max_record_bytes ({max_record_bytes})"
        )
    if name in ("recs", "cols") and size.isdigit():
        return f"the entry's {name!r} is {size} bytes, over the writer's max_batch_bytes"
    return f"entry over the writer's limits, not read: {what}"


def _part(head: Entry, index: int, fields: dict[bytes, bytes]) -> Entry:
    """Record ``index`` of a packed entry, before decoding; its fields are those it would have
    as an entry of its own."""
    part_fields = {
        name: value for name, value in fields.items() if name not in (FIELD_COUNT, FIELD_RECORDS)
    }
    part_fields[FIELD_SEQ] = str(head.seq + index).encode()
    return Entry(
        head.entry_id,
        head.reply_key,
        head.seq + index,
        None,
        deadline_ms=head.deadline_ms,
        fields=part_fields,
        part=index,
        version=head.version,
    )


def _columnar(head: Entry, count: int, body: bytes, fields: dict[bytes, bytes]) -> list[Entry]:
    """The records of a columnar entry: one ``Entry`` each, sharing the entry's columns."""
    shared = {name: value for name, value in fields.items() if name not in _BLOCK_FIELDS}
    block: ColumnBlock | None = None
    problems: dict[int, str] = {}
    rejection = head.rejection
    if rejection is None:
        try:
            columns, problems = decode_columns(body, count)
            block = ColumnBlock(columns, count, body, head.version)
        except RecordRejected as exc:
            rejection = str(exc)
    # Made without ``Entry.__init__`` (a third of the writer's time reading an entry of many
    # records went to it): what ``__post_init__`` works out is the same for every record here,
    # but the record id.
    prefix = f"{head.record_id}#"
    parts = []
    for index in range(count):
        entry = _new_entry(Entry)
        entry.entry_id = head.entry_id
        entry.reply_key = head.reply_key
        entry.seq = head.seq + index
        entry.record = None
        entry.rejection = rejection or problems.get(index)
        entry.deadline_ms = head.deadline_ms
        entry.fields = shared
        entry.part = index
        entry.block = block
        entry.version = head.version
        entry.delete = False
        entry.record_id = prefix + str(index)
        entry.producer_id = head.producer_id
        entry.ranged = head.ranged
        parts.append(entry)
    return parts


_new_entry = object.__new__


_BLOCK_FIELDS = (FIELD_COUNT, FIELD_COLUMNS)


def _decode_into(entry: Entry, data: bytes, max_record_bytes: int | None) -> None:
    if max_record_bytes is not None and len(data) > max_record_bytes:
        entry.rejection = (
            f"record is {len(data)} bytes encoded, over the writer's max_record_bytes "
            f"({max_record_bytes})"
        )
        return
    try:
        entry.record = decode_record(data)
    except RecordRejected as exc:
        entry.rejection = str(exc)


def _reply_key(keys: TableKeys, entry_id: bytes, fields: dict[bytes, bytes]) -> str | None:
    raw = fields.get(FIELD_REPLY)
    if raw is None:
        logger.warning("entry %s has no reply key; it will not be answered", entry_id)
        return None
    key = _valid_reply_key(keys, raw)
    if key is None:
        logger.warning(
            "entry %s names reply key %r outside %s; it will not be answered",
            entry_id,
            raw[:200],
            keys.reply_prefix,
        )
        return None
    return key


@functools.lru_cache(maxsize=4096)
def _valid_reply_key(keys: TableKeys, raw: bytes) -> str | None:
    """``raw`` as a reply key of the table, or None if it is not one (cached: a batch holds
    many entries of few producers)."""
    try:
        key = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return key if keys.is_reply_key(key) else None
