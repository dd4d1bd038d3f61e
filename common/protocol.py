"""The wire format between producers and the writer (PROTOCOL.md is the prose version).

A stream entry carries one record::

    v      "1"                       protocol version
    reply  lancequeue:{T}:reply:ID   the producer's reply list
    seq    "17"                      the producer's sequence number for this record
    ttl    "59980"                   ms the record may wait, counted from the entry id's time
    rec    <msgpack map>             the record (common/codec.py)

or several (a packed entry), in place of ``rec``::

    n      "3"                       how many records
    recs   <msgpack array of bin>    each one an encoded record; record i has sequence seq + i

A record's deadline is its entry id's millisecond part plus ``ttl``, both in Redis server time,
so producer and writer clocks never need to agree. A writer never writes a record whose deadline
passed before its batch was built: it answers ``WriteTimeout`` instead. Whether a record the
writer has not answered by its deadline is written is decided in Redis: the writer claims a
batch's records before writing them, a producer abandons a record at its deadline plus its
grace (``ABANDON_SCRIPT``), and exactly one of the two wins.

After each flush the writer pushes, to every reply list with records in the batch, one msgpack
array of results: ``[seq, nil, digest]`` when the record is in the table (``record_digest`` of
what was written), else ``[seq, error]``, ``error`` a map ``{"error": "RecordRejected" |
"WriteFailed" | "WriteTimeout", "message": str, "cause": str}``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from lancequeue.common.codec import packb, unpackb
from lancequeue.common.errors import LancequeueError, RecordRejected, WriteFailed, WriteTimeout

PROTOCOL_VERSION = b"1"
FIELD_VERSION = b"v"
FIELD_REPLY = b"reply"
FIELD_SEQ = b"seq"
FIELD_TTL = b"ttl"
FIELD_RECORD = b"rec"
FIELD_COUNT = b"n"
FIELD_RECORDS = b"recs"
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
"""Expiry of a producer's set of abandoned sequence numbers, renewed at each abandonment; the
writer removes the members it has settled."""
DIGEST_BYTES = 8

DEFAULT_MAX_QUEUE_SIZE = 4096
"""Records the stream may hold before producers wait, until a writer publishes its own value."""
CONFIG_MAX_QUEUE_SIZE = "max_queue_size"
CONFIG_MAX_BATCH = "max_batch"
"""Config hash field: the writer's ``max_batch``; producers pack no more records per entry."""

ENTRY_WIDTH = 10
"""Arguments one single-record entry takes in the enqueue script: five field/value pairs."""
PACKED_ENTRY_WIDTH = 12
"""Arguments one packed entry takes in the enqueue script: six field/value pairs."""

ENQUEUE_SCRIPT = """
local limit = tonumber(redis.call('HGET', KEYS[2], 'max_queue_size') or '')
if not limit or limit < 1 then limit = tonumber(ARGV[1]) end
local width = tonumber(ARGV[2])
local stored = tonumber(redis.call('GET', KEYS[3]) or '0') or 0
local length = redis.call('XLEN', KEYS[1])
local queued = stored
if length == 0 then queued = 0 elseif queued < length then queued = length end
local last = 2
local i = 3
while i + width - 1 <= #ARGV do
  local n = 1
  if width == 12 then n = math.max(tonumber(ARGV[i + 9]) or 1, 1) end
  if queued + n > limit and queued > 0 then break end
  queued = queued + n
  last = i + width - 1
  i = i + width
end
if queued ~= stored then redis.call('INCRBY', KEYS[3], queued - stored) end
local ids = {}
for j = 3, last, width do
  ids[#ids + 1] = redis.call('XADD', KEYS[1], '*', unpack(ARGV, j, j + width - 1))
end
return ids
"""
"""Append entries, in order, while the stream holds fewer than ``max_queue_size`` records.

KEYS: stream, config, queued. ARGV: default max_queue_size (also used if the config hash holds
no positive one), entry width (10 for single-record entries,
12 for packed ones, whose ``n`` is the fifth pair), then each entry's field/value pairs.
Returns the ids of the entries added: a prefix of those given, empty when the queue is full.
An entry is added to an empty queue even if it alone holds more than ``max_queue_size``
records. The ``queued`` key counts the records in the stream: the script decides
what fits and records it before adding anything (so a failing ``XADD`` adds nothing after the
count), takes it as 0 when the stream is empty and as at least ``XLEN`` otherwise (healing a
count that drifted), and the writer lowers it as it deletes entries.
"""


def entry_fields(reply_key: str, seq: int, record: bytes, ttl_ms: int) -> list[bytes | str]:
    """The field/value pairs of one stream entry, in the order the enqueue script takes them.

    ``ttl_ms`` is how long the record may still wait: the writer drops it (answering
    ``WriteTimeout``) if its batch is built later than that after the entry was added.
    """
    return [
        FIELD_VERSION,
        PROTOCOL_VERSION,
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


ABANDON_SCRIPT = """
local epoch = redis.call('GET', KEYS[4]) or ''
if ARGV[2] ~= '' and epoch ~= ARGV[2] then
  return -1
end
local seen = tonumber(redis.call('GET', KEYS[1]) or '-1') or -1
local claim = tonumber(redis.call('GET', KEYS[2]) or '-1') or -1
local decided = math.max(seen, claim)
local abandoned = {}
for i = 3, #ARGV do
  if tonumber(ARGV[i]) > decided then
    redis.call('SADD', KEYS[3], ARGV[i])
    abandoned[#abandoned + 1] = ARGV[i]
  end
end
if #abandoned > 0 then redis.call('PEXPIRE', KEYS[3], ARGV[1]) end
return abandoned
"""
"""Abandon records a producer sent and the writer has not answered by their deadline.

KEYS: the producer's ``seen``, ``claim`` and ``abandoned`` keys, and the ``epoch`` key. ARGV: the
expiry of the abandoned set (ms), the stream's epoch the records were sent under ('' if none
was known), then sequence numbers. Returns those abandoned: no writer had claimed or settled
them, and none ever will write them. The others were claimed by a writer (or settled): their
true answer is on its way. Returns -1, abandoning nothing, if the stream's epoch changed since
(Redis lost its data, claims included): their outcome cannot be known."""


def record_digest(data: bytes) -> bytes:
    """What the writer answers a written record with: a digest of its encoded bytes, so a
    producer can tell its own record from another client's sent under its id and sequence
    number."""
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


def error_payload(kind: str, message: str, cause: str) -> dict[str, str]:
    """The error map of a result (``kind`` is a key of ``REPLY_ERRORS``)."""
    return {"error": kind, "message": message, "cause": cause}


def decode_results(message: bytes | str) -> list[Result]:
    """Parse one reply message into results; raises ``ValueError`` if it is malformed."""
    try:
        items: Any = unpackb(message.encode() if isinstance(message, str) else message)
    except Exception as exc:  # msgpack and the extension decoders raise several types
        raise ValueError(f"undecodable reply message: {exc}") from exc
    if not isinstance(items, list):
        raise ValueError("reply message must be a msgpack array")
    results = []
    for item in items:
        if not (isinstance(item, list) and len(item) in (2, 3) and isinstance(item[0], int)):
            raise ValueError(f"malformed result {item!r:.200}")
        seq, payload = item[0], item[1]
        if payload is not None:
            results.append(Result(seq, _to_error(payload)))
        elif len(item) == 3 and isinstance(item[2], bytes):
            results.append(Result(seq, None, item[2]))
        else:
            raise ValueError(f"result {item!r:.200} says written but carries no digest")
    return results


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
