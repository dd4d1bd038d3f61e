"""Reading stream entries: who to answer, and the record or why it was rejected."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from lancequeue.common.codec import decode_record
from lancequeue.common.errors import RecordRejected
from lancequeue.common.keys import TableKeys
from lancequeue.common.protocol import (
    FIELD_RECORD,
    FIELD_REPLY,
    FIELD_SEQ,
    FIELD_TTL,
    FIELD_VERSION,
    PROTOCOL_VERSION,
)

logger = logging.getLogger(__name__)


@dataclass
class Entry:
    """One stream entry as the writer sees it.

    ``reply_key`` is None when the entry names no usable reply key: such an entry is acked and
    never answered. ``rejection`` is set when the record cannot go into the table.
    """

    entry_id: bytes
    reply_key: str | None
    seq: int
    record: dict[str, Any] | None
    rejection: str | None = None
    deadline_ms: int | None = None
    """Redis server time (ms) after which the record must not be written; None: no deadline."""
    fields: dict[bytes, bytes] = field(default_factory=dict, repr=False)
    """The raw fields, kept for the dead-letter stream."""

    @property
    def producer_id(self) -> str | None:
        return None if self.reply_key is None else self.reply_key.rsplit(":", 1)[-1]


def read_entry(
    keys: TableKeys,
    entry_id: bytes,
    fields: dict[bytes, bytes],
    max_record_bytes: int | None = None,
) -> Entry:
    """Decode one entry; never raises, whatever the entry holds."""
    reply_key = _reply_key(keys, entry_id, fields)
    seq = _seq(fields)
    if reply_key is not None and seq is None:
        logger.warning("entry %s: missing or invalid 'seq'; it will not be answered", entry_id)
        reply_key = None
    entry = Entry(entry_id, reply_key, seq or 0, None, fields=fields)
    version = fields.get(FIELD_VERSION)
    if version != PROTOCOL_VERSION:
        entry.rejection = f"unsupported protocol version {version!r:.40} (this writer speaks 1)"
        return entry
    ttl = fields.get(FIELD_TTL)
    if ttl is not None:
        if not ttl.isdigit() or len(ttl) > 15:
            entry.rejection = f"invalid 'ttl' {ttl!r:.40}: milliseconds as a decimal integer"
            return entry
        entry.deadline_ms = _id_ms(entry_id) + int(ttl)
    data = fields.get(FIELD_RECORD)
    if data is None:
        entry.rejection = "entry has no 'rec' field"
        return entry
    if max_record_bytes is not None and len(data) > max_record_bytes:
        entry.rejection = (
            f"record is {len(data)} bytes encoded, over the writer's max_record_bytes "
            f"({max_record_bytes})"
        )
        return entry
    try:
        entry.record = decode_record(data)
    except RecordRejected as exc:
        entry.rejection = str(exc)
    return entry


def _reply_key(keys: TableKeys, entry_id: bytes, fields: dict[bytes, bytes]) -> str | None:
    raw = fields.get(FIELD_REPLY)
    if raw is None:
        logger.warning("entry %s has no reply key; it will not be answered", entry_id)
        return None
    try:
        key = raw.decode("utf-8")
    except UnicodeDecodeError:
        key = ""
    if not keys.is_reply_key(key):
        logger.warning(
            "entry %s names reply key %r outside %s; it will not be answered",
            entry_id,
            raw[:200],
            keys.reply_prefix,
        )
        return None
    return key


def _seq(fields: dict[bytes, bytes]) -> int | None:
    raw = fields.get(FIELD_SEQ)
    if raw is None or not raw.isdigit() or len(raw) > 19:
        return None
    seq = int(raw)
    return seq if seq < 2**63 else None


def _id_ms(entry_id: bytes) -> int:
    return int(entry_id.split(b"-", 1)[0])
