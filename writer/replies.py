"""After a flush: ack and delete the batch's entries, answer every reply key, publish the flush.

All of it is one Lua script, so a batch is never acked without being answered; the same script
raises each producer's highest settled sequence number (for dedupe), forgets the abandoned
sequence numbers now settled, and moves entries that exhausted their deliveries to the
dead-letter stream. Its first write is the ``XACK``, which Redis allows at ``maxmemory``: the
writes after it may then go over the cap, and the ``XDEL``s free the batch's memory, so a full
Redis never strands answered-but-unacked records (a ``MULTI`` holding an ``RPUSH`` would be
refused whole). Only keys of the table's own namespace are written: reply keys were checked
when the entries were read.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from lancequeue.common.codec import encode_record
from lancequeue.common.keys import GROUP, TableKeys
from lancequeue.common.protocol import (
    FIELD_RECORD,
    FIELD_SEQ,
    Answer,
    encode_ranges,
    encode_results,
)
from lancequeue.common.redis_client import AsyncRedis
from lancequeue.writer.entries import Entry
from lancequeue.writer.watermark import SKIPPED_SILENTLY, Outcome

logger = logging.getLogger(__name__)

_ACK_AND_ANSWER = """
local group, ttl, channel = ARGV[1], ARGV[2], ARGV[3]
local reopen, packing = tonumber(ARGV[4]), tonumber(ARGV[5])
local a = 6
local count = tonumber(ARGV[a])
a = a + 1
local ids, records = {}, {}
for i = 1, count do
  ids[i], records[i] = ARGV[a], tonumber(ARGV[a + 1])
  a = a + 2
end
-- Writes Redis allows at maxmemory come first (after one of them, the others may follow).
redis.call('PEXPIRE', KEYS[1], 9999999999999)
redis.call('PERSIST', KEYS[1])
local removed, acked = 0, 0
for first = 1, count, 1000 do
  local last = math.min(first + 999, count)
  acked = acked + redis.call('XACK', KEYS[1], group, unpack(ids, first, last))
  for i = first, last do
    removed = removed + redis.call('XDEL', KEYS[1], ids[i]) * records[i]
  end
end
if redis.call('XLEN', KEYS[1]) == 0 then
  redis.call('SET', KEYS[2], 0)
elseif removed > 0 then
  local left = (tonumber(redis.call('GET', KEYS[2]) or '0') or 0) - removed
  redis.call('SET', KEYS[2], math.max(left, 0))
end
-- Acked before (this call repeated after a lost reply): its dead letters and counts are in.
local again = count > 0 and acked == 0
local dead = tonumber(ARGV[a])
a = a + 1
for d = 1, dead do
  local width = tonumber(ARGV[a])
  if not again then
    redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[a + 1], '*', unpack(ARGV, a + 2, a + 1 + width))
  end
  a = a + 2 + width
end
local failures = {}
for k = 7, #KEYS, 3 do
  local seen, message, dropped = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2])
  -- The abandoned sequence numbers this batch settled: forgotten (the rest of the set expires).
  for first = a + 3, a + 2 + dropped, 1000 do
    redis.call('SREM', KEYS[k + 2], unpack(ARGV, first, math.min(first + 999, a + 2 + dropped)))
  end
  a = a + 3 + dropped
  if seen ~= '' then
    local settled = tonumber(seen)
    local current = tonumber(redis.call('GET', KEYS[k]) or '-1') or -1
    if settled > current then
      redis.call('SET', KEYS[k], seen, 'PX', ttl)
    else
      redis.call('PEXPIRE', KEYS[k], ttl)
      settled = current
    end
  end
  if message ~= '' then
    -- pcall: a reply key someone made another type must not lose the other answers.
    local pushed = redis.pcall('RPUSH', KEYS[k + 1], message)
    if type(pushed) == 'table' and pushed.err then
      failures[#failures + 1] = KEYS[k + 1] .. ': ' .. pushed.err
    else
      redis.call('PEXPIRE', KEYS[k + 1], ttl)
    end
  end
end
local increments = tonumber(ARGV[a])
a = a + 1
for i = 1, increments do
  if not again then redis.call('HINCRBY', KEYS[3], ARGV[a], ARGV[a + 1]) end
  a = a + 2
end
redis.call('HSET', KEYS[3], unpack(ARGV, a))
-- Producers waiting for room are woken once the queue is at most half full, not by every
-- flush: each then sends a large call, and calls the queue refuses stay few.
local queued = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
local inboxed = tonumber(redis.call('GET', KEYS[6]) or '0') or 0
inboxed = math.min(inboxed, redis.call('LLEN', KEYS[5]) * packing)
if queued + inboxed <= reopen then redis.call('PUBLISH', channel, count) end
return failures
"""
"""KEYS: stream, queued counter, status hash, dead-letter stream, inbox, inboxed counter, then per
producer its seen key, reply key and abandoned key. ARGV: group, reply expiry (ms), flushed
channel, the most records the queue may hold for it to be told of (half of ``max_queue_size``),
``max_batch`` (the most records an inbox entry holds); the number of
entries, then each entry's id and record count; the number of dead letters, then each one's
field count, MAXLEN and fields; per producer its settled sequence number ('' for none), its
reply message ('' for none), the number of its abandoned sequence numbers the batch settled and
those; the number of status increments, then field/increment pairs; then status fields to set.
Returns the reply keys that could not be written to, with Redis's error. It publishes on the
flushed channel only if the stream and the inbox then hold at most half of ``max_queue_size``
records (the inbox's count taken as at most its length times ``max_batch``)."""

DEAD_LETTERS_MAXLEN = 100_000
"""The dead-letter stream keeps about this many entries, oldest dropped first."""


@dataclass
class DeadLetter:
    entry: Entry
    deliveries: int
    reason: str


@dataclass
class Acknowledgement:
    """Everything one flush tells Redis."""

    entries: list[Entry]
    answers: dict[str, Outcome]
    """Record id → answer (None: written). Records not here, or answered ``SKIPPED_SILENTLY``,
    are acked without an answer."""
    increments: dict[str, int] = field(default_factory=dict)
    values: dict[str, int | str] = field(default_factory=dict)
    dead_letters: list[DeadLetter] = field(default_factory=list)


class Acknowledger:
    """Acks and answers the flushes of one table."""

    def __init__(
        self,
        redis: AsyncRedis,
        keys: TableKeys,
        reply_ttl_ms: int,
        max_queue_size: int,
        max_batch: int,
    ) -> None:
        self._keys = keys
        self._reply_ttl_ms = reply_ttl_ms
        self._reopen_at = max_queue_size // 2
        self._max_batch = max_batch
        self._script = redis.register_script(_ACK_AND_ANSWER)

    async def send(self, ack: Acknowledgement) -> None:
        """Ack and delete the entries, push each reply key its results, record each producer's
        settled sequence number, dead-letter what must be, and update the status hash."""
        keys = self._keys
        per_producer: dict[str, list[Answer]] = defaultdict(list)
        seen: dict[str, int] = {}
        plain: set[str] = set()  # producers with an entry of version 1 here
        for entry in ack.entries:
            producer = entry.producer_id
            if producer is None:
                continue
            answer = ack.answers.get(entry.record_id, SKIPPED_SILENTLY)
            if answer == SKIPPED_SILENTLY:
                continue  # acked unanswered: nothing settled for this producer either
            seen[producer] = max(seen.get(producer, -1), entry.seq)
            if not entry.ranged:
                plain.add(producer)
            digest = entry.digest if answer is None else None
            per_producer[producer].append((entry.seq, answer, digest))
        # stream entry id → its records, in stream order
        records_of = Counter(entry.entry_id for entry in ack.entries)
        script_keys = [
            keys.stream,
            keys.queued,
            keys.writer,
            keys.dead_letters,
            keys.inbox,
            keys.inboxed,
        ]
        args: list[bytes | str | int] = [
            GROUP,
            self._reply_ttl_ms,
            keys.flushed_channel,
            self._reopen_at,
            self._max_batch,
        ]
        args.append(len(records_of))
        for entry_id, records in records_of.items():
            args += [entry_id, records]
        args.append(len(ack.dead_letters))
        for dead in ack.dead_letters:
            fields = _dead_letter_fields(dead)
            args += [len(fields), DEAD_LETTERS_MAXLEN, *fields]
        for producer in seen.keys() | per_producer.keys():
            script_keys += [keys.seen(producer), keys.reply(producer), keys.abandoned(producer)]
            results = per_producer.get(producer)
            dropped = [seq for seq, answer, _ in results or [] if _abandoned(answer)]
            # In ranges only if every entry under the reply key asked for them: another client's
            # entry of version 2 never changes the form a version-1 producer reads.
            encode = encode_ranges if producer not in plain else encode_results
            args += [seen.get(producer, ""), encode(results) if results else ""]
            args += [len(dropped), *dropped]
        args.append(len(ack.increments))
        for name, increment in ack.increments.items():
            args += [name, increment]
        status: dict[str, int | str] = {"last_flush_at_ms": int(time.time() * 1000)}
        status.update(ack.values)
        for name, value in status.items():
            args += [name, value]
        failures = await self._script(keys=script_keys, args=args)
        for failure in failures:
            logger.warning("after a flush of %d entries: %s", len(records_of), failure)


def _abandoned(answer: dict[str, str] | None) -> bool:
    """Whether ``answer`` says its record was abandoned by its producer (its seq is in the
    producer's abandoned set, which the ack then forgets)."""
    return answer is not None and answer.get("cause") == "abandoned"


def _dead_letter_fields(dead: DeadLetter) -> list[bytes | str | int]:
    fields: dict[bytes | str, bytes | str | int] = {}
    for name, value in dead.entry.fields.items():
        fields[name] = value
    if dead.entry.part is not None:  # one record of several: its own number
        fields[FIELD_SEQ] = str(dead.entry.seq)
    record = dead.entry.materialized()
    if dead.entry.block is not None and record is not None:  # a columnar entry's: on its own
        fields[FIELD_RECORD] = encode_record(record)
    fields.update(
        {
            "reason": dead.reason,
            "deliveries": dead.deliveries,
            "original_id": dead.entry.entry_id,
            "dead_at_ms": int(time.time() * 1000),
        }
    )
    return [part for pair in fields.items() for part in pair]
