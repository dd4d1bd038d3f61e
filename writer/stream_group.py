"""The writer's side of the table's stream: the consumer group, reads, and orphaned entries."""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from lancequeue.common.keys import GROUP, TableKeys
from lancequeue.common.protocol import CONFIG_EPOCH, CONFIG_MAX_QUEUE_SIZE

logger = logging.getLogger(__name__)

RawEntry = tuple[bytes, dict[bytes, bytes] | None]
_CLAIM_COUNT = 1000
_CLAIM = """
local r = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], 'COUNT', ARGV[5],
                     'JUSTID')
return {r[1], r[2]}
"""
"""XAUTOCLAIM with JUSTID: claiming does not count as a delivery (reading the entry afterwards
does), so an entry's delivery count is how many writers read it. In a script because redis-py
drops the cursor of a JUSTID reply."""


class StreamGroup:
    """One writer's consumer in the table's consumer group, plus the status it publishes."""

    def __init__(self, redis: aioredis.Redis, keys: TableKeys, consumer: str) -> None:
        self._redis = redis
        self.keys = keys
        self.consumer = consumer
        self._claim = redis.register_script(_CLAIM)
        self.epoch = ""
        """The stream's epoch, as of the last ``ensure()``."""

    async def ensure(self) -> str:
        """Create the stream and the group (from the first entry) unless they exist; return the
        stream's epoch, a name that changes whenever the group had to be created anew (so a
        watermark from a lost stream is never applied to a new one)."""
        created = True
        try:
            await self._redis.xgroup_create(self.keys.stream, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
            created = False
        fresh = uuid.uuid4().hex
        if created:
            await self._redis.hset(self.keys.config, CONFIG_EPOCH, fresh)
        else:
            await self._redis.hsetnx(self.keys.config, CONFIG_EPOCH, fresh)
        self.epoch = _text(await self._redis.hget(self.keys.config, CONFIG_EPOCH))
        return self.epoch

    async def deliveries(self, entry_ids: list[bytes]) -> dict[bytes, int]:
        """How many times each of this consumer's pending entries was read."""
        if not entry_ids:
            return {}
        pending: Any = await self._redis.xpending_range(
            self.keys.stream,
            GROUP,
            min=entry_ids[0],
            max=entry_ids[-1],
            count=len(entry_ids) * 2,
            consumername=self.consumer,
        )
        return {item["message_id"]: int(item["times_delivered"]) for item in pending}

    async def read(self, position: str, count: int, block_ms: int) -> list[RawEntry]:
        """``XREADGROUP`` from ``position``: ``">"`` for new entries (blocking up to
        ``block_ms``), an id for this consumer's own pending entries after it."""
        try:
            response: Any = await self._redis.xreadgroup(
                GROUP,
                self.consumer,
                {self.keys.stream: position},
                count=count,
                block=block_ms if position == ">" else None,
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            logger.warning("stream or group of %r vanished; recreating it", self.keys.table)
            await self.ensure()
            return []
        if not response:
            return []
        entries: list[RawEntry] = response[0][1]
        return entries

    async def claim_orphans(self, min_idle_ms: int) -> int:
        """Take over entries other consumers (dead writers) left pending for at least
        ``min_idle_ms``, then forget consumers that own nothing. Returns how many were taken;
        the caller replays them from this consumer's pending list."""
        start = "0-0"
        claimed = 0
        while True:
            response: Any = await self._claim(
                keys=[self.keys.stream],
                args=[GROUP, self.consumer, min_idle_ms, start, _CLAIM_COUNT],
            )
            claimed += len(response[1])
            start = _text(response[0])
            if start == "0-0":
                break
        for consumer in await self._redis.xinfo_consumers(self.keys.stream, GROUP):
            name = _text(consumer["name"])
            if name != self.consumer and int(consumer["pending"]) == 0:
                await self._redis.xgroup_delconsumer(self.keys.stream, GROUP, name)
        return claimed

    async def announce(self, max_queue_size: int, status: dict[str, int | str]) -> None:
        """Publish ``max_queue_size`` for producers and start a fresh status hash."""
        now_ms = int(time.time() * 1000)
        fields: dict[str | bytes, int | str] = {
            "state": "running",
            "consumer": self.consumer,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started_at_ms": now_ms,
            "heartbeat_at_ms": now_ms,
            "batches": 0,
            "rows": 0,
            "rejected": 0,
            "failed": 0,
            "expired": 0,
            "duplicates": 0,
            "recovered": 0,
            "dead_letters": 0,
        }
        fields.update(status)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.keys.config, CONFIG_MAX_QUEUE_SIZE, max_queue_size)
            pipe.delete(self.keys.writer)
            pipe.hset(self.keys.writer, mapping=fields)  # type: ignore[arg-type]
            await pipe.execute()

    async def retire(self) -> None:
        """Mark the status hash stopped."""
        await self._redis.hset(
            self.keys.writer,
            mapping={"state": "stopped", "stopped_at_ms": int(time.time() * 1000)},
        )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
