"""A table's dead letters: read, describe, replay and delete them (``lancequeue dlq``).

The writer moves an entry that was delivered more than ``max_deliveries`` times without being
written (it kept crashing the writer) to the stream ``lancequeue:{T}:dead``, with the original
entry's fields (``v``, ``reply``, ``seq``, ``ttl``, and ``rec``, or ``del`` for a delete by key)
plus ``reason``, ``deliveries``, ``original_id`` and ``dead_at_ms``. These functions read that
stream with Redis alone (no lancedb); :func:`replay` sends the records and deletes again, in
their order, through a fresh :class:`Producer`.
"""

from __future__ import annotations

import concurrent.futures
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from lancequeue.common.codec import decode_record
from lancequeue.common.errors import LancequeueError, RecordRejected
from lancequeue.common.keys import TableKeys
from lancequeue.common.protocol import (
    FIELD_DEAD_AT_MS,
    FIELD_DELETE,
    FIELD_DELIVERIES,
    FIELD_ORIGINAL_ID,
    FIELD_REASON,
    FIELD_RECORD,
    FIELD_REPLY,
    FIELD_SEQ,
)
from lancequeue.common.redis_client import SyncRedis, sync_client
from lancequeue.common.stream_ids import is_stream_id
from lancequeue.producer.producer import Producer
from lancequeue.producer.settings import ProducerSettings

_DELETE_CHUNK = 1000  # ids per XDEL
_PREVIEW_CHARS = 100
_PREVIEW_TEXT_CHARS = 24
DEFAULT_ANSWER_GRACE_MS = ProducerSettings.answer_grace_ms


@dataclass(frozen=True)
class DeadLetter:
    """One entry of a table's dead-letter stream."""

    id: str
    fields: dict[bytes, bytes] = field(repr=False)

    def text(self, name: bytes) -> str | None:
        """A field as text (``None`` when absent)."""
        value = self.fields.get(name)
        return None if value is None else value.decode("utf-8", "replace")

    def number(self, name: bytes) -> int | None:
        """A decimal field as an int (``None`` when absent or not a number)."""
        value = self.text(name)
        return int(value) if value is not None and value.isdecimal() else None

    @property
    def is_delete(self) -> bool:
        """Whether it is a delete by key (``del``), not a record."""
        return FIELD_DELETE in self.fields and FIELD_RECORD not in self.fields

    @property
    def record_bytes(self) -> bytes | None:
        """The record as encoded (a delete's key)."""
        return self.fields.get(FIELD_DELETE if self.is_delete else FIELD_RECORD)

    def record(self) -> dict[str, Any]:
        """The decoded record (a delete's key); raises ``RecordRejected`` saying why it cannot
        be read."""
        data = self.record_bytes
        if data is None:
            raise RecordRejected("the dead letter has no 'rec' field")
        try:
            return decode_record(data)
        except RecordRejected as exc:
            cause = exc.__cause__
            if cause is None or str(cause):
                raise
            # msgpack raises some errors without a message: name the error instead.
            raise RecordRejected(f"{exc}{type(cause).__name__}") from cause


# -- reading and deleting --------------------------------------------------------------------


def _letters(entries: Any) -> list[DeadLetter]:
    """DeadLetters from an XRANGE reply (redis-py types it loosely)."""
    found: Iterable[tuple[bytes, dict[bytes, bytes]]] = entries or []
    return [DeadLetter(entry_id.decode(), dict(fields)) for entry_id, fields in found]


def read_dead_letters(
    client: SyncRedis, keys: TableKeys, limit: int | None = None
) -> list[DeadLetter]:
    """The first ``limit`` dead letters of the table (all when ``None``), oldest first."""
    return _letters(client.xrange(keys.dead_letters, count=limit))


def read_by_ids(client: SyncRedis, keys: TableKeys, ids: Iterable[str]) -> list[DeadLetter]:
    """The dead letters with these ids, in the order given (duplicates once).

    Raises ``LancequeueError`` naming every id that is malformed or not in the stream, before
    anything is done with the others.
    """
    wanted = list(dict.fromkeys(ids))
    malformed = [i for i in wanted if not is_stream_id(i)]
    if malformed:
        raise LancequeueError(
            f"not a stream id (expected <ms>-<seq>): {', '.join(map(repr, malformed))}"
        )
    with client.pipeline(transaction=False) as pipe:
        for entry_id in wanted:
            pipe.xrange(keys.dead_letters, entry_id, entry_id)
        found = pipe.execute()
    unknown = [i for i, entries in zip(wanted, found, strict=True) if not entries]
    if unknown:
        raise LancequeueError(
            f"no dead letter of table {keys.table!r} with id {', '.join(unknown)}"
        )
    return [letter for entries in found for letter in _letters(entries)]


def delete_dead_letters(client: SyncRedis, keys: TableKeys, ids: list[str]) -> int:
    """XDEL ``ids`` from the dead-letter stream; returns how many were there."""
    deleted = 0
    for start in range(0, len(ids), _DELETE_CHUNK):
        deleted += int(client.xdel(keys.dead_letters, *ids[start : start + _DELETE_CHUNK]))
    return deleted


# -- showing ---------------------------------------------------------------------------------


def _preview_value(value: Any) -> str:
    if isinstance(value, str):
        short = value[:_PREVIEW_TEXT_CHARS] + ("…" if len(value) > _PREVIEW_TEXT_CHARS else "")
        return json.dumps(short, ensure_ascii=False)
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, list):
        return f"[{len(value)} items]"
    if isinstance(value, dict):
        return f"{{{len(value)} fields}}"
    dtype, shape = getattr(value, "dtype", None), getattr(value, "shape", None)
    if dtype is not None and shape is not None:  # a numpy array
        return f"<{dtype}{list(shape)}>"
    return repr(value)


def preview(record: dict[str, Any]) -> str:
    """A one-line, bounded rendering of a record: long values summarised, vectors as shapes."""
    text = "{" + ", ".join(f"{name}: {_preview_value(v)}" for name, v in record.items()) + "}"
    return text if len(text) <= _PREVIEW_CHARS else text[: _PREVIEW_CHARS - 1] + "…"


def describe(letter: DeadLetter) -> dict[str, Any]:
    """What ``dlq list --json`` prints for one dead letter."""
    data = letter.record_bytes
    try:
        shown, error = preview(letter.record()), None
    except RecordRejected as exc:
        shown, error = None, str(exc)
    if letter.is_delete and shown is not None:
        shown = f"delete {shown}"
    return {
        "id": letter.id,
        "original_id": letter.text(FIELD_ORIGINAL_ID),
        "deliveries": letter.number(FIELD_DELIVERIES),
        "reason": letter.text(FIELD_REASON),
        "dead_at_ms": letter.number(FIELD_DEAD_AT_MS),
        "reply": letter.text(FIELD_REPLY),
        "seq": letter.number(FIELD_SEQ),
        "record_bytes": None if data is None else len(data),
        "preview": shown,
        "record_error": error,
        "delete": letter.is_delete,
    }


def format_line(info: dict[str, Any]) -> str:
    """One text line of ``dlq list``."""
    size = "-" if info["record_bytes"] is None else f"{info['record_bytes']}B"
    record = info["preview"] if info["record_error"] is None else f"({info['record_error']})"
    return (
        f"{info['id']}  original={info['original_id'] or '-'}"
        f"  deliveries={'-' if info['deliveries'] is None else info['deliveries']}"
        f"  size={size}  reason={json.dumps(info['reason'] or '', ensure_ascii=False)}"
        f"  record={record}"
    )


# -- replaying -------------------------------------------------------------------------------


@dataclass
class ReplayReport:
    """What became of each replayed dead letter."""

    written: list[str] = field(default_factory=list)
    """Ids of dead letters whose record is now in the table, or whose delete was applied
    (deleted from the stream)."""
    failed: list[tuple[str, str]] = field(default_factory=list)
    """(id, why) of dead letters left in the stream."""


def replay(
    url: str,
    keys: TableKeys,
    letters: list[DeadLetter],
    timeout_ms: int,
    answer_grace_ms: int = DEFAULT_ANSWER_GRACE_MS,
) -> ReplayReport:
    """Send the records and deletes of ``letters``, in their order, through a new producer (a
    fresh identity, so the writer's (producer, seq) dedupe does not drop them, and a fresh
    deadline of ``timeout_ms``), wait for the writer's answers and delete each dead letter whose
    record was written (or delete applied), at once.

    Every record is answered by its deadline plus ``answer_grace_ms``: a record the writer did
    not answer by then fails with ``WriteTimeout`` and was not written, so its dead letter stays
    and can be replayed again safely.
    """
    report = ReplayReport()
    sendable: list[tuple[DeadLetter, dict[str, Any]]] = []
    for letter in letters:
        try:
            sendable.append((letter, letter.record()))
        except RecordRejected as exc:
            report.failed.append((letter.id, f"not sent: {exc}"))
    if not sendable:
        return report
    with (
        sync_client(url) as client,
        Producer(
            keys.table, redis_url=url, timeout_ms=timeout_ms, answer_grace_ms=answer_grace_ms
        ) as producer,
    ):
        letter_of: dict[concurrent.futures.Future[Any], DeadLetter] = {}
        for letter, data in sendable:  # in order: a delete applies after the records before it
            send = producer.enqueue_delete if letter.is_delete else producer.enqueue
            try:
                letter_of[send(data)] = letter
            except LancequeueError as exc:  # refused at once: not encodable, or no room in time
                report.failed.append((letter.id, f"{type(exc).__name__}: {exc}"))
        for future in concurrent.futures.as_completed(letter_of):
            letter = letter_of[future]
            if (error := future.exception()) is not None:
                report.failed.append((letter.id, f"{type(error).__name__}: {error}"))
            else:
                delete_dead_letters(client, keys, [letter.id])
                report.written.append(letter.id)
    position = {letter.id: n for n, letter in enumerate(letters)}
    report.failed.sort(key=lambda failure: position[failure[0]])
    return report
