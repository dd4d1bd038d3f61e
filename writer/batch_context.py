"""Redis time, the lease holder and producers' settled sequence numbers, in one round trip.

A script rather than a pipeline so that it runs on the node serving the table's keys: under
Redis Cluster every key of a table lives on one node, and its clock is the one deadlines and
stream ids are measured against.
"""

from __future__ import annotations

from dataclasses import dataclass

from lancequeue.common.keys import TableKeys
from lancequeue.common.redis_client import AsyncRedis

_CONTEXT = """
local now = redis.call('TIME')
local holder = redis.call('GET', KEYS[1])
local seen = {}
for first = 2, #KEYS, 1000 do
  local values = redis.call('MGET', unpack(KEYS, first, math.min(first + 999, #KEYS)))
  for _, value in ipairs(values) do
    seen[#seen + 1] = value
  end
end
return {now[1], now[2], holder, seen}
"""
"""KEYS: the lease, then the ``seen`` keys wanted. Returns seconds, microseconds, the lease's
holder (nil if free) and the seen values (nil for a producer never settled). MGET a thousand
keys at a time: Lua's ``unpack`` fails beyond about 8,000 values."""


@dataclass(frozen=True)
class BatchContext:
    now_ms: int
    """Redis server time."""
    lease_holder: str | None
    seen: list[bytes | None]
    """The values of the ``seen`` keys asked for, in order."""


class BatchContextReader:
    """Reads a :class:`BatchContext` of one table."""

    def __init__(self, redis: AsyncRedis, keys: TableKeys) -> None:
        self._keys = keys
        self._script = redis.register_script(_CONTEXT)

    async def read(self, seen_keys: list[str] | None = None) -> BatchContext:
        seconds, microseconds, holder, seen = await self._script(
            keys=[self._keys.lease, *(seen_keys or [])]
        )
        return BatchContext(
            now_ms=int(seconds) * 1000 + int(microseconds) // 1000,
            lease_holder=holder.decode() if isinstance(holder, bytes) else holder,
            seen=list(seen),
        )
