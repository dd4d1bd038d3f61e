"""The writer's heartbeat: proof that a writer is alive, and a guard against two at once.

A writer takes the table's heartbeat key only when no other writer holds it (``SET NX``), and
refreshes it only while it still holds it. A second writer started for the same table waits
until the first one stops or its heartbeat expires (3 intervals after it died), so it never
claims the entries of a writer that is still serving them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import redis.asyncio as aioredis

from lancequeue.common.keys import TableKeys

logger = logging.getLogger(__name__)

_REFRESH = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  redis.call('HSET', KEYS[2], 'heartbeat_at_ms', ARGV[3])
  return 1
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


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

    async def beat(self) -> bool:
        """Refresh the heartbeat; False if another writer holds it now."""
        held = await self._refresh(
            keys=[self._keys.heartbeat, self._keys.writer],
            args=[self.consumer, self.expiry_ms, int(time.time() * 1000)],
        )
        return bool(held)

    async def release(self) -> None:
        await self._release(keys=[self._keys.heartbeat], args=[self.consumer])
