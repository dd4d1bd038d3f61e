"""The writer's heartbeat: proof that a writer is alive, and a guard against two at once.

A writer takes the table's heartbeat key only when no other writer holds it (``SET NX``) and
refreshes it while it holds it. A second writer started for the same table waits until the first
one stops or its heartbeat expires (3 intervals after it died), so it never claims the entries
of a writer that is still serving them. A writer that finds its heartbeat held by another (it
stalled past the expiry and was replaced) must stop at once, without flushing.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time

import redis.asyncio as aioredis

from lancequeue.common.keys import TableKeys

logger = logging.getLogger(__name__)

_REFRESH = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('HSET', KEYS[2], 'heartbeat_at_ms', ARGV[3])
if holder then
  return 1
end
return 2
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class Beat(enum.Enum):
    HELD = 1
    RETAKEN = 2
    """The key had vanished (Redis restarted, flushed, or this writer stalled) and was free."""
    LOST = 0
    """Another writer holds the key: this one was replaced."""


class Heartbeat:
    """One writer's hold on its table's heartbeat key."""

    def __init__(
        self, redis: aioredis.Redis, keys: TableKeys, consumer: str, interval_ms: int
    ) -> None:
        self._redis = redis
        self._keys = keys
        self.consumer = consumer
        self.interval_s = interval_ms / 1000
        self.expiry_ms = 3 * interval_ms
        self._refresh = redis.register_script(_REFRESH)
        self._release = redis.register_script(_RELEASE)

    async def acquire(self, give_up: asyncio.Event) -> bool:
        """Take the heartbeat, waiting while another live writer holds it. False if ``give_up``
        was set first."""
        announced = False
        while not give_up.is_set():
            taken = await self._redis.set(
                self._keys.heartbeat, self.consumer, px=self.expiry_ms, nx=True
            )
            if taken:
                return True
            if not announced:
                holder = await self._redis.get(self._keys.heartbeat)
                logger.warning(
                    "writer %s is alive for table %r; waiting until it stops",
                    holder.decode() if isinstance(holder, bytes) else holder,
                    self._keys.table,
                )
                announced = True
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(give_up.wait(), self.interval_s)
        return False

    async def beat(self) -> Beat:
        """Refresh the heartbeat (retaking it if it vanished and is free)."""
        state = await self._refresh(
            keys=[self._keys.heartbeat, self._keys.writer],
            args=[self.consumer, self.expiry_ms, int(time.time() * 1000)],
        )
        return Beat(int(state))

    async def holder(self) -> str | None:
        value = await self._redis.get(self._keys.heartbeat)
        return value.decode() if isinstance(value, bytes) else value

    async def release(self) -> None:
        await self._release(keys=[self._keys.heartbeat], args=[self.consumer])
