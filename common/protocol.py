"""The wire format between producers and the writer (PROTOCOL.md is the prose version).

Producers push entries onto the table's inbox list (``ENQUEUE_SCRIPT``); the writer moves them
into the stream it reads with its consumer group. A stream entry carries one record::

    v      "1"                       protocol version ("2": its producer reads answers in ranges)
    reply  lancequeue:{T}:reply:ID   the producer's reply list
    seq    "17"                      the producer's sequence number for this record
    ttl    "59980"                   ms the record may wait, counted from ``at``
    rec    <msgpack map>             the record (common/codec.py)
    at     "1764871234567"           Redis time of the push, added by the writer's move

or several (a packed entry), in place of ``rec``::

    n      "3"                       how many records
    recs   <msgpack array of bin>    each one an encoded record; record i has sequence seq + i

or several column by column (a columnar entry, ``common/columns.py``), in place of ``rec``::

    n      "3"                       how many records
    cols   <msgpack map>             column name -> one value per record, or one array of them

A record's deadline is ``at`` (or the entry id's time, if earlier) plus ``ttl``, both Redis
server time, so producer and writer clocks never need to agree and no client moves it. A writer
never writes a record whose deadline passed before its batch was built: it answers
``WriteTimeout`` instead. Whether a record the writer has not answered by its deadline is
written is decided in Redis: the writer claims a batch's records before writing them, a
producer abandons a record at its deadline plus its grace (``ABANDON_SCRIPT``), and exactly one
of the two wins.

After each flush the writer pushes, to every reply list with records in the batch, one
message: for entries of version 1 a msgpack array of results, ``[seq, nil, digest]`` when the
record is in the table (``record_digest`` of what was written: the record's ``rec``, or for a
columnar entry its ``cols``), else ``[seq, error]``, ``error`` a map ``{"error":
"RecordRejected" | "WriteFailed" | "WriteTimeout", "message": str, "cause": str}``; for a
producer that sent entries of version 2, ``{"ok": [[first, last, digest], ...], "errors":
[[seq, error], ...]}`` (``encode_ranges``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from lancequeue.common.codec import packb, unpackb
from lancequeue.common.errors import LancequeueError, RecordRejected, WriteFailed, WriteTimeout
from lancequeue.common.lua_scripts import lua_script

PROTOCOL_VERSION = b"1"
RANGED_VERSION = b"2"
"""Entries of version 2 are those of version 1 from a producer that reads its answers in ranges
(``encode_ranges``). The Python producer sends them to writers that publish ``columnar_batch``."""
SHA256_VERSION = b"3"
"""Entries of version 3 are those of version 2 whose ok answers carry SHA-256 digests, not
BLAKE2b (``record_digest``): the cheaper of the two wherever the CPU hashes SHA-256 in hardware,
as most x86 and ARM server CPUs do. The Python producer sends them to writers that publish
``protocol`` 3 or more."""
VERSIONS = (PROTOCOL_VERSION, RANGED_VERSION, SHA256_VERSION)
HIGHEST_VERSION = SHA256_VERSION
RANGED_VERSIONS = (RANGED_VERSION, SHA256_VERSION)
"""The versions whose producers read their answers in ranges."""
FIELD_VERSION = b"v"
FIELD_REPLY = b"reply"
FIELD_SEQ = b"seq"
FIELD_TTL = b"ttl"
FIELD_RECORD = b"rec"
FIELD_COUNT = b"n"
FIELD_RECORDS = b"recs"
FIELD_COLUMNS = b"cols"
FIELD_AT = b"at"
"""Added by the writer as it moves an entry from the inbox: the Redis time (ms) it was pushed,
set by the enqueue script. A record's deadline is counted from it (or from the entry id, if
earlier or missing), so no entry id a client might choose moves it."""
MAX_PACKED_RECORDS = 65536
"""Most records one packed entry may carry."""
MAX_SEQ = 2**53 - 1
"""Largest sequence number: Redis scripts compare them as Lua numbers (doubles)."""
SEQ_JUMP_LIMIT = 2**32
"""A producer's sequence number more than this above the highest the writer settled or claimed
for it is refused (acked, never written or answered): it can only be another client's doing
(an honest producer's numbers skip only records that never reached the stream), and would make
the producer's later records look like copies."""
ABANDONED_TTL_MS = 86_400_000
"""Expiry of a producer's set of abandoned sequence numbers, set by the writer at each claim of
that producer's records; the writer removes the members it has settled."""
DIGEST_BYTES = 8

DEFAULT_MAX_QUEUE_SIZE = 4096
"""Records the stream may hold before producers wait, until a writer publishes its own value."""
CONFIG_MAX_QUEUE_SIZE = "max_queue_size"
CONFIG_MAX_BATCH = "max_batch"
"""Config hash field: the writer's ``max_batch``; producers pack no more records per entry (the
enqueue script also bounds its count of the inbox's records by it)."""
CONFIG_COLUMNAR_BATCH = "columnar_batch"
"""Config hash field of a writer that reads columnar entries: its ``max_batch`` again. The
Python producer sends columnar entries of up to this many records, and none without it."""
CONFIG_COLUMNS = "columns"
"""Config hash field: JSON of each column's kind (``COLUMN_KINDS``), once the table exists."""
COLUMN_KINDS = ("string", "integer", "number", "boolean", "list", "other")
CONFIG_WRITER_UNTIL = "writer_until_ms"
"""Config hash field: until when (Redis time, ms) the lease holder renewed it; gone at stop."""
CONFIG_PROTOCOL = "protocol"
"""Config hash field: the highest entry version the writer reads (``HIGHEST_VERSION``). The
Python producer sends entries of version 3 once it is 3 or more."""

ENTRY_WIDTH = 10
"""Arguments one single-record entry takes in the enqueue script: five field/value pairs."""
PACKED_ENTRY_WIDTH = 12
"""Arguments one packed or columnar entry takes in the enqueue script: six field/value pairs."""

ENQUEUE_SCRIPT = lua_script(
    __name__,
    "enqueue.lua",
    ENTRY_WIDTH=ENTRY_WIDTH,
    PACKED_ENTRY_WIDTH=PACKED_ENTRY_WIDTH,
    MAX_PACKED_RECORDS=MAX_PACKED_RECORDS,
    CONFIG_MAX_QUEUE_SIZE=CONFIG_MAX_QUEUE_SIZE,
    CONFIG_MAX_BATCH=CONFIG_MAX_BATCH,
)
"""Push entries onto the inbox while the queue has room (``lua/enqueue.lua`` says how)."""
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


ABANDON_SCRIPT = lua_script(__name__, "abandon.lua")
"""Abandon records the writer has not answered by their deadline (``lua/abandon.lua``)."""


def record_digest(data: bytes, version: bytes = PROTOCOL_VERSION) -> bytes:
    """What the writer answers a written record with: a digest of its encoded bytes, so a
    producer can tell its own record from another client's sent under its id and sequence
    number. The first ``DIGEST_BYTES`` of SHA-256 for entries of ``SHA256_VERSION``, BLAKE2b of
    that size for the others."""
    if version == SHA256_VERSION:
        return hashlib.sha256(data).digest()[:DIGEST_BYTES]
    return hashlib.blake2b(data, digest_size=DIGEST_BYTES).digest()


@dataclass(frozen=True)
class Result:
    """The writer's answer for one record: ``error`` None means written, and ``digest`` is then
    the written record's (``record_digest``)."""

    seq: int
    error: LancequeueError | None
    digest: bytes | None = None


Answer = tuple[int, dict[str, str] | None, bytes | None]
"""A result as the writer sends it: sequence number, error map (None: written), digest."""


def encode_results(results: list[Answer]) -> bytes:
    """One reply message: the results of one producer's records in one flush."""
    return packb(
        [
            [seq, error] if error is not None else [seq, None, digest]
            for seq, error, digest in results
        ]
    )


def encode_ranges(results: list[Answer]) -> bytes:
    """One reply message in ranges, for a producer whose entries are of ``RANGED_VERSION``:
    ``{"ok": [[first, last, digest], ...], "errors": [[seq, error], ...]}``, the records
    ``first`` to ``last`` written (each with that digest), and only the others one by one."""
    written: list[list[Any]] = []
    errors: list[list[Any]] = []
    for seq, error, digest in results:
        if error is not None:
            errors.append([seq, error])
        elif written and written[-1][1] == seq - 1 and written[-1][2] == digest:
            written[-1][1] = seq
        else:
            written.append([seq, seq, digest])
    return packb({"ok": written, "errors": errors})


@dataclass(frozen=True)
class Reply:
    """One reply message: the records written, in ranges, and the others' errors."""

    written: list[tuple[int, int, bytes]]
    """``(first, last, digest)``: records ``first`` to ``last`` are in the table."""
    errors: list[tuple[int, LancequeueError]]

    @property
    def highest(self) -> int | None:
        """The highest sequence number answered (None if none is)."""
        tops = [last for _, last, _ in self.written] + [seq for seq, _ in self.errors]
        return max(tops, default=None)


def decode_reply(message: bytes | str) -> Reply:
    """Parse one reply message, in either form (``encode_results``, ``encode_ranges``); raises
    ``ValueError`` if it is malformed."""
    try:
        items: Any = unpackb(message.encode() if isinstance(message, str) else message)
    except Exception as exc:  # msgpack and the extension decoders raise several types
        raise ValueError(f"undecodable reply message: {exc}") from exc
    if isinstance(items, dict):
        return _ranges_reply(items)
    if not isinstance(items, list):
        raise ValueError("reply message must be a msgpack array or map")
    reply = Reply([], [])
    for item in items:
        if not (isinstance(item, list) and len(item) in (2, 3) and type(item[0]) is int):
            raise ValueError(f"malformed result {item!r:.200}")
        seq, payload = item[0], item[1]
        if payload is not None:
            reply.errors.append((seq, _to_error(payload)))
        elif len(item) == 3 and isinstance(item[2], bytes):
            reply.written.append((seq, seq, item[2]))
        else:
            raise ValueError(f"result {item!r:.200} says written but carries no digest")
    return reply


def _ranges_reply(items: dict[str, Any]) -> Reply:
    written, errors = items.get("ok", []), items.get("errors", [])
    if not (isinstance(written, list) and isinstance(errors, list)):
        raise ValueError("a reply in ranges holds an 'ok' and an 'errors' array")
    reply = Reply([], [])
    for item in written:
        if not (
            isinstance(item, list)
            and len(item) == 3
            and type(item[0]) is int
            and type(item[1]) is int
            and 0 <= item[0] <= item[1]
            and isinstance(item[2], bytes)
        ):
            raise ValueError(f"malformed range {item!r:.200}")
        reply.written.append((item[0], item[1], item[2]))
    for item in errors:
        if not (isinstance(item, list) and len(item) == 2 and type(item[0]) is int):
            raise ValueError(f"malformed result {item!r:.200}")
        reply.errors.append((item[0], _to_error(item[1])))
    return reply


def error_payload(kind: str, message: str, cause: str) -> dict[str, str]:
    """The error map of a result (``kind`` is a key of ``REPLY_ERRORS``)."""
    return {"error": kind, "message": message, "cause": cause}


def decode_results(message: bytes | str) -> list[Result]:
    """Parse one reply message, in either form, into one result per record (in ranges: each
    record of a range); raises ``ValueError`` if it is malformed."""
    reply = decode_reply(message)
    named = sum(last - first + 1 for first, last, _ in reply.written)
    if named > MAX_PACKED_RECORDS:
        raise ValueError(f"reply names {named} records written, more than one flush answers")
    results = [
        Result(seq, None, digest)
        for first, last, digest in reply.written
        for seq in range(first, last + 1)
    ]
    results += [Result(seq, error) for seq, error in reply.errors]
    return sorted(results, key=lambda result: result.seq)


def _to_error(payload: Any) -> LancequeueError:
    if not isinstance(payload, dict):
        return LancequeueError(f"malformed error payload {payload!r}")
    kind = str(payload.get("error", ""))
    message = str(payload.get("message", ""))
    cause = str(payload.get("cause", ""))
    if kind == "WriteFailed":
        return WriteFailed(cause or "Exception", message)
    if kind == "RecordRejected":
        return RecordRejected(message)
    if kind == "WriteTimeout":
        return WriteTimeout(message)
    return LancequeueError(f"{kind}: {message}")
