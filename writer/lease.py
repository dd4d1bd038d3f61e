"""The writer's lease on its table: one writer at a time, each with a larger fencing token.

A writer takes the lease only when no other writer holds it (``SET NX PX``) and renews it well
inside its expiry. Taking it hands out the next fencing token (``INCR``). A second writer started
for the same table waits as a standby, polling, and takes the lease over once the first one's
expires: within ``lease_ms`` of the first one dying or hanging.

The token is also written into the table itself when a writer takes over (see ``sink.py``), so a
writer that was paused past its expiry and resumed cannot commit again: it checks its lease
before every commit, and the table rejects a commit based on a version older than the newer
writer's fence.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time

from lancequeue.common.keys import TableKeys
from lancequeue.common.redis_client import AsyncRedis

logger = logging.getLogger(__name__)

_ACQUIRE = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
local token = redis.call('INCR', KEYS[2])
local floor = tonumber(ARGV[3])
if token <= floor then
  token = floor + 1
  redis.call('SET', KEYS[2], token)
end
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. token, 'PX', ARGV[2])
return token
"""
_RENEW = """
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


class Renewal(enum.Enum):
    HELD = 1
    RETAKEN = 2
    """The lease had vanished (Redis restarted without its data, or this writer stalled past
    the expiry and nobody took it) and was free: taken back with the same token."""
    LOST = 0
    """Another writer holds the lease: this one was replaced."""


class Lease:
    """One writer's hold on its table's lease."""

    def __init__(self, redis: AsyncRedis, keys: TableKeys, consumer: str, ttl_ms: int) -> None:
        self._redis = redis
        self._keys = keys
        self.consumer = consumer
        self.ttl_ms = ttl_ms
        self.token = 0
        self._acquire = redis.register_script(_ACQUIRE)
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)

    @property
    def renew_interval_s(self) -> float:
        return self.ttl_ms / 4000

    @property
    def poll_interval_s(self) -> float:
        """How often a standby tries to take the lease."""
        return self.ttl_ms / 16000

    @property
    def value(self) -> str:
        return f"{self.consumer} {self.token}"

    async def acquire(self, give_up: asyncio.Event, min_token: int = 0) -> bool:
        """Take the lease, waiting as a standby while another writer holds it; the token is
        larger than ``min_token`` (the newest fence found in the table). False if ``give_up`` was
        set first."""
        announced = False
        while not give_up.is_set():
            token = int(
                await self._acquire(
                    keys=[self._keys.lease, self._keys.fence],
                    args=[self.consumer, self.ttl_ms, min_token],
                )
            )
            if token:
                self.token = token
                return True
            if not announced:
                logger.warning(
                    "writer %s holds table %r; standing by until its lease expires",
                    await self.holder(),
                    self._keys.table,
                )
                announced = True
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(give_up.wait(), self.poll_interval_s)
        return False

    async def renew(self) -> Renewal:
        """Extend the lease (taking it back if it vanished and is free)."""
        state = await self._renew(
            keys=[self._keys.lease, self._keys.writer],
            args=[self.value, self.ttl_ms, int(time.time() * 1000)],
        )
        return Renewal(int(state))

    @property
    def key(self) -> str:
        return self._keys.lease

    async def holder(self) -> str | None:
        value = await self._redis.get(self._keys.lease)
        return value.decode() if isinstance(value, bytes) else value

    async def release(self) -> None:
        await self._release(keys=[self._keys.lease], args=[self.value])
