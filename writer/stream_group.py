"""The writer's side of the table's stream: the consumer group, reads, and orphaned entries."""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from lancequeue.common.keys import GROUP, TableKeys
from lancequeue.common.protocol import CONFIG_MAX_QUEUE_SIZE

logger = logging.getLogger(__name__)

RawEntry = tuple[bytes, dict[bytes, bytes] | None]
_CLAIM_COUNT = 1000


class StreamGroup:
    """One writer's consumer in the table's consumer group, plus the status it publishes."""

    def __init__(self, redis: aioredis.Redis, keys: TableKeys, consumer: str) -> None:
        self._redis = redis
        self.keys = keys
        self.consumer = consumer

    async def ensure(self) -> None:
        """Create the stream and the group (from the first entry) unless they exist."""
        try:
            await self._redis.xgroup_create(self.keys.stream, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

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
            response = await self._redis.xautoclaim(
                self.keys.stream,
                GROUP,
                self.consumer,
                min_idle_time=min_idle_ms,
                start_id=start,
                count=_CLAIM_COUNT,
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
