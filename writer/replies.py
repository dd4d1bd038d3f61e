"""After a flush: ack and trim the batch's entries, answer every reply key, publish the flush.

All of it goes to Redis in one MULTI, so a batch is never acked without being answered; the same
MULTI records each producer's highest settled sequence number (for dedupe) and moves entries that
exhausted their deliveries to the dead-letter stream. Only keys of the table's own namespace are
written: reply keys were checked when the entries were read.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field

from lancequeue.common.keys import GROUP, TableKeys
from lancequeue.common.protocol import encode_results
from lancequeue.common.redis_client import AsyncRedis
from lancequeue.writer.entries import Entry
from lancequeue.writer.watermark import SKIPPED_SILENTLY, Outcome

logger = logging.getLogger(__name__)

_RAISE_SEEN = """
for i, key in ipairs(KEYS) do
  local seq = tonumber(ARGV[i + 1])
  local current = tonumber(redis.call('GET', key) or '-1')
  if seq > current then
    redis.call('SET', key, seq, 'PX', ARGV[1])
  else
    redis.call('PEXPIRE', key, ARGV[1])
  end
end
"""
"""Raise each producer's settled sequence number, never lower it."""

_DELETE_ENTRIES = """
local removed = 0
for i = 1, #ARGV, 2 do
  removed = removed + redis.call('XDEL', KEYS[1], ARGV[i]) * tonumber(ARGV[i + 1])
end
if redis.call('XLEN', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[2], 'queued', 0)
elseif removed > 0 then
  local left = tonumber(redis.call('HGET', KEYS[2], 'queued') or '0') - removed
  redis.call('HSET', KEYS[2], 'queued', math.max(left, 0))
end
return removed
"""
"""Delete acked entries and lower the count of queued records by the records of those deleted
(KEYS: stream, config; ARGV: id, records, id, records, ...). An empty stream resets the count,
so it can never drift for long."""

_PUBLISH = """
redis.call('PUBLISH', ARGV[1], ARGV[2])
"""
"""PUBLISH from a script naming the table's stream (KEYS[1]): a Redis Cluster pipeline routes
commands by their keys and refuses a bare PUBLISH; from the table's node it reaches every
subscriber, whichever node they are on."""

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


async def ack_and_answer(
    redis: AsyncRedis, keys: TableKeys, ack: Acknowledgement, reply_ttl_ms: int
) -> None:
    """Ack and delete the entries, push each reply key its results, record each producer's
    settled sequence number, dead-letter what must be, and update the writer's status hash."""
    per_reply_key: dict[str, list[tuple[int, Outcome]]] = defaultdict(list)
    seen: dict[str, int] = {}
    for entry in ack.entries:
        if entry.reply_key is None or entry.producer_id is None:
            continue
        seen[entry.producer_id] = max(seen.get(entry.producer_id, 0), entry.seq)
        answer = ack.answers.get(entry.record_id, SKIPPED_SILENTLY)
        if answer != SKIPPED_SILENTLY:
            per_reply_key[entry.reply_key].append((entry.seq, answer))
    records_of: dict[bytes, int] = {}  # stream entry id → its records, in stream order
    for entry in ack.entries:
        records_of[entry.entry_id] = records_of.get(entry.entry_id, 0) + 1
    ids = list(records_of)
    now_ms = int(time.time() * 1000)
    async with redis.pipeline(transaction=True) as pipe:
        for dead in ack.dead_letters:
            fields: dict[bytes | str, bytes | str | int] = {}
            for field_name, value in dead.entry.fields.items():
                fields[field_name] = value
            fields.update(
                {
                    "reason": dead.reason,
                    "deliveries": dead.deliveries,
                    "original_id": dead.entry.entry_id,
                    "dead_at_ms": now_ms,
                }
            )
            pipe.xadd(keys.dead_letters, fields, maxlen=DEAD_LETTERS_MAXLEN, approximate=True)  # type: ignore[arg-type]
        pipe.xack(keys.stream, GROUP, *ids)
        pipe.eval(
            _DELETE_ENTRIES,
            2,
            keys.stream,
            keys.config,
            *[part for pair in records_of.items() for part in pair],
        )
        if seen:
            seen_keys = [keys.seen(producer_id) for producer_id in seen]
            pipe.eval(_RAISE_SEEN, len(seen_keys), *seen_keys, reply_ttl_ms, *seen.values())
        for reply_key, results in per_reply_key.items():
            pipe.rpush(reply_key, encode_results(results))
            pipe.pexpire(reply_key, reply_ttl_ms)
        for name, increment in ack.increments.items():
            pipe.hincrby(keys.writer, name, increment)
        status: dict[str | bytes, int | str] = {"last_flush_at_ms": now_ms}
        status.update(ack.values)
        pipe.hset(keys.writer, mapping=status)  # type: ignore[arg-type]
        pipe.eval(_PUBLISH, 1, keys.stream, keys.flushed_channel, len(ids))
        # raise_on_error=False: one command failing (a reply key someone made a string:
        # WRONGTYPE) must not lose the acks and the other answers, which Redis applied.
        results = await pipe.execute(raise_on_error=False)
    for result in results:
        if isinstance(result, Exception):
            logger.warning("after a flush of %d entries: %s", len(ids), result)
