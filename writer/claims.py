"""Claiming a batch in Redis before committing it.

A producer abandons a record it has had no answer for by its deadline, atomically in Redis
(``common.protocol.ABANDON_SCRIPT``), unless a writer claimed it first; the writer claims the
records of a batch before it writes them, and never writes one its producer abandoned. Exactly
one of the two wins, so a producer told ``WriteTimeout`` can trust it, and a record the writer
claimed gets its true answer even if that comes after the deadline.

One round trip per batch does it all: Redis time (the batch's build time, which deadlines are
checked against), the lease (a replaced writer claims nothing), and per producer its settled
sequence number, the claim, and the sequence numbers it abandoned. A script, so it runs on the
node serving the table's keys under Redis Cluster.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lancequeue.common.errors import WriterReplaced
from lancequeue.common.keys import TableKeys
from lancequeue.common.protocol import ABANDONED_TTL_MS, SEQ_JUMP_LIMIT
from lancequeue.common.redis_client import AsyncRedis
from lancequeue.writer.scripting import KEEP_LEASE

CLAIM_TTL_MS = ABANDONED_TTL_MS
"""Expiry of a producer's claim key, renewed at each claim: as long as its abandoned set is
kept, so no record outlives the claim on it (a commit slower than that is not foreseen)."""

_CLAIM = (
    """
local now = redis.call('TIME')
local holder = redis.call('GET', KEYS[2])
if holder and holder ~= ARGV[1] then
  return {now[1], now[2], holder, {}}
end
"""
    + KEEP_LEASE
    + """
local limit = tonumber(ARGV[4])
local out = {}
local a = 5
for k = 3, #KEYS, 3 do
  local seen = tonumber(redis.call('GET', KEYS[k]) or '-1') or -1
  local claimed = tonumber(redis.call('GET', KEYS[k + 1]) or '-1') or -1
  local base = math.max(seen, claimed)
  local top, top_text = claimed, nil
  local refused, seqs = {}, {}
  local ranges = tonumber(ARGV[a])
  a = a + 1
  for r = 1, ranges do
    local first, last = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
    if base >= 0 and first > base + limit then
      refused[#refused + 1] = r
    else
      if last > top then
        top, top_text = last, ARGV[a + 1]
      end
      if last > base then base = last end
      for s = first, last do seqs[#seqs + 1] = string.format('%d', s) end
    end
    a = a + 2
  end
  if top_text then
    redis.call('SET', KEYS[k + 1], top_text, 'PX', ARGV[3])
  elseif claimed >= 0 then
    redis.call('PEXPIRE', KEYS[k + 1], ARGV[3])
  end
  local abandoned = {}
  if redis.call('EXISTS', KEYS[k + 2]) == 1 then
    -- Only the batch's own sequence numbers are asked about: whatever else a client put in
    -- the set (anything at all, on a producer account) is never read.
    for first = 1, #seqs, 1000 do
      local last = math.min(first + 999, #seqs)
      local found = redis.call('SMISMEMBER', KEYS[k + 2], unpack(seqs, first, last))
      for i = 1, #found do
        if found[i] == 1 then abandoned[#abandoned + 1] = seqs[first + i - 1] end
      end
    end
    redis.call('PEXPIRE', KEYS[k + 2], ARGV[3])
  end
  out[#out + 1] = {seen, refused, abandoned}
end
return {now[1], now[2], false, out}
"""
)
"""KEYS: the stream, the lease, then per producer its seen, claim and abandoned keys. ARGV: the
lease value, the lease's expiry (ms), the claim's expiry (ms), the jump limit, then per producer
the number of its ranges and each range's first and last sequence number, in stream order.
Returns Redis time, the lease holder if it is another writer (then nothing was claimed), and per
producer its settled sequence number (-1: none), the (1-based) ranges refused as jumping too
far ahead, and those of its sequence numbers in the batch it abandoned."""

Ranges = dict[str, list[tuple[int, int]]]
"""Per producer id, the sequence numbers of its records in a batch: one (first, last) range per
stream entry, in stream order."""


@dataclass(frozen=True)
class ProducerClaim:
    """What Redis said of one producer's records in the batch."""

    seen: int
    """Its highest settled sequence number (-1: none)."""
    refused: frozenset[int] = frozenset()
    """Positions (0-based) of its ranges refused: too far ahead of anything settled or claimed."""
    abandoned: frozenset[int] = frozenset()
    """Its sequence numbers in the batch that it abandoned."""


@dataclass(frozen=True)
class BatchClaim:
    now_ms: int
    """Redis server time: the batch's build time."""
    producers: dict[str, ProducerClaim] = field(default_factory=dict)


class Claimer:
    """Claims batches of one table for the writer holding ``lease_value``."""

    def __init__(self, redis: AsyncRedis, keys: TableKeys, lease_value: str, lease_ms: int) -> None:
        self._keys = keys
        self._lease_value = lease_value
        self._lease_ms = lease_ms
        self._script = redis.register_script(_CLAIM)

    async def claim(self, ranges: Ranges) -> BatchClaim:
        """Claim the ranges' records; raises ``WriterReplaced`` if another writer holds the
        lease (nothing is claimed then)."""
        producers = list(ranges)
        keys = [self._keys.stream, self._keys.lease]
        args: list[str | int] = [self._lease_value, self._lease_ms, CLAIM_TTL_MS]
        args.append(SEQ_JUMP_LIMIT)
        for producer in producers:
            keys += [
                self._keys.seen(producer),
                self._keys.claim(producer),
                self._keys.abandoned(producer),
            ]
            args.append(len(ranges[producer]))
            for first, last in ranges[producer]:
                args += [first, last]
        seconds, microseconds, holder, results = await self._script(keys=keys, args=args)
        if holder:
            text = holder.decode() if isinstance(holder, bytes) else str(holder)
            raise WriterReplaced(f"writer {text.split(' ')[0]} holds the lease now")
        claims = {
            producer: ProducerClaim(
                int(seen),
                frozenset(int(position) - 1 for position in refused),
                frozenset(int(member) for member in abandoned),
            )
            for producer, (seen, refused, abandoned) in zip(producers, results, strict=True)
        }
        return BatchClaim(int(seconds) * 1000 + int(microseconds) // 1000, claims)

    async def now_ms(self) -> int:
        """Redis time (checking the lease, claiming nothing)."""
        return (await self.claim({})).now_ms
