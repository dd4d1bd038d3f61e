"""The writer's side of the table's stream: the consumer group, reads, and orphaned entries."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable
from typing import Any

from redis.exceptions import ResponseError

from lancequeue.common.errors import WriterReplaced
from lancequeue.common.keys import GROUP, TableKeys
from lancequeue.common.lua_scripts import lua_script
from lancequeue.common.protocol import (
    CONFIG_COLUMNAR_BATCH,
    CONFIG_MAX_BATCH,
    CONFIG_MAX_QUEUE_SIZE,
    CONFIG_PROTOCOL,
    HIGHEST_VERSION,
)
from lancequeue.common.redis_client import REDIS_FAILURES, AsyncRedis
from lancequeue.common.script_calls import ScriptCalls
from lancequeue.writer.lease import Lease

logger = logging.getLogger(__name__)

RawEntry = tuple[bytes, dict[bytes, bytes] | None]
_CLAIM_COUNT = 1000

# The Lua scripts of the writer's side of the stream (lua/): each checks the lease where it takes
# entries, and those that must run at maxmemory start with a write Redis allows there.
_ENSURE = lua_script(__name__, "ensure.lua")
_ANNOUNCE = lua_script(__name__, "announce.lua")
_READ_NEW = lua_script(__name__, "read_new.lua")
_READ_PENDING = lua_script(__name__, "read_pending.lua")
_CLAIM = lua_script(__name__, "claim_entries.lua")
OTHER_FIELD_LIMIT = 4096
"""Most bytes a read brings of an entry's field other than ``rec``, ``recs`` and ``cols``
(``lua/bounded_read.lua``): a larger one stays in Redis and its record is refused."""


class StreamGroup:
    """One writer's consumer in the table's consumer group, plus the status it publishes."""

    def __init__(
        self,
        redis: AsyncRedis,
        keys: TableKeys,
        lease: Lease,
        max_record_bytes: int,
        max_batch_bytes: int,
    ) -> None:
        self._redis = redis
        self._limits = [max_record_bytes, max_batch_bytes, OTHER_FIELD_LIMIT]
        self.keys = keys
        self.consumer = lease.consumer
        self._lease = lease
        self.calls = ScriptCalls(redis)
        """The hot path's script calls (reads, claims, acks); the server closes them when it
        stops serving (``TableServer.serve``)."""
        self._claim = redis.register_script(_CLAIM)
        self._read_new = redis.register_script(_READ_NEW)
        self._read_pending = redis.register_script(_READ_PENDING)
        self._announce = redis.register_script(_ANNOUNCE)
        self._ensure = redis.register_script(_ENSURE)
        self.epoch = ""
        """The stream's epoch, as of the last ``ensure()``."""
        self._doorbell: Any = None
        """Subscription to the pushed channel, while waiting for producers."""

    async def ensure(self) -> str:
        """Create the stream and the group (from the first entry) unless they exist; return the
        stream's epoch: a name kept in the config hash, new whenever Redis lost it (with the
        stream), so that nothing of a lost stream (a watermark, a claim) is taken for the new
        one's."""
        created, epoch = await self._ensure(
            keys=[self.keys.stream, self.keys.config, self.keys.epoch],
            args=[GROUP, uuid.uuid4().hex],
        )
        self.epoch = _text(epoch)
        if created:
            logger.info("consumer group of %r created (epoch %s)", self.keys.table, self.epoch)
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

    @property
    def _lease_args(self) -> list[str | int]:
        return [self._lease.value, self._lease.ttl_ms]

    async def read_new(
        self, count: int, block_ms: int | None, budget: int | None = None
    ) -> list[RawEntry]:
        """Read up to ``count`` entries no writer has read, stopping once they hold ``budget``
        bytes (default ``max_batch_bytes``), if this writer still holds the lease (raises
        ``WriterReplaced`` if not); with none there, wait up to ``block_ms`` for one to arrive
        (None: do not wait) and return nothing (the caller reads again)."""
        response: Any = await self._unless_group_vanished(
            self.calls(
                self._read_new,
                [
                    self.keys.stream,
                    self.keys.lease,
                    self.keys.inbox,
                    self.keys.queued,
                    self.keys.inboxed,
                ],
                [*self._lease_args, GROUP, self.consumer, count, *self._budget(budget)],
            )
        )
        if response is None:
            return []
        if response[0] == 0:
            raise _replaced(response[1])
        if response[0] == 1:
            return [(entry_id, _pairs(fields)) for entry_id, fields in response[1]]
        if block_ms is not None:
            await self._wait_for_push(block_ms)
        return []

    async def _wait_for_push(self, block_ms: int) -> None:
        """Wait up to ``block_ms`` for a producer's push (the pushed channel). The first call
        only subscribes: a push between the read before and the subscription would be missed,
        so the caller reads again at once."""
        if self._doorbell is None:
            doorbell = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await doorbell.subscribe(self.keys.pushed_channel)
            except BaseException:
                await doorbell.aclose()
                raise
            self._doorbell = doorbell
            return
        try:
            rang = await self._doorbell.get_message(
                ignore_subscribe_messages=True, timeout=block_ms / 1000
            )
            # Those already here were published before the read that follows: it covers them.
            while rang is not None:
                rang = await self._doorbell.get_message(ignore_subscribe_messages=True, timeout=0)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Drop the subscription to the pushed channel (made anew when next needed)."""
        doorbell, self._doorbell = self._doorbell, None
        if doorbell is not None:
            with contextlib.suppress(*REDIS_FAILURES):
                await doorbell.aclose()

    def _budget(self, budget: int | None) -> list[int]:
        return [max(1, budget if budget is not None else self._limits[1]), *self._limits]

    async def _unless_group_vanished(self, read: Awaitable[Any]) -> Any:
        """The read's reply, or None if the stream or group vanished (Redis lost its data):
        then they are created anew, with a new epoch."""
        try:
            return await read
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            logger.warning("stream or group of %r vanished; recreating it", self.keys.table)
            await self.ensure()
            return None

    async def read_pending(
        self, after: str, count: int, budget: int | None = None
    ) -> list[RawEntry]:
        """This consumer's pending entries after id ``after`` (``"0"``: from the first): up to
        ``count``, stopping once they hold ``budget`` bytes (default ``max_batch_bytes``)."""
        response: Any = await self._unless_group_vanished(
            self.calls(
                self._read_pending,
                [self.keys.stream],
                [GROUP, self.consumer, after, count, *self._budget(budget)],
            )
        )
        if not response:
            return []
        return [(entry_id, _pairs(fields)) for entry_id, fields in response]

    async def claim_orphans(self, min_idle_ms: int) -> int:
        """Take over entries other consumers (dead writers) left pending for at least
        ``min_idle_ms``, then forget consumers that own nothing. Returns how many were taken;
        the caller replays them from this consumer's pending list."""
        start = "0-0"
        claimed = 0
        while True:
            response: Any = await self._claim(
                keys=[self.keys.stream, self.keys.lease],
                args=[*self._lease_args, GROUP, self.consumer, min_idle_ms, start, _CLAIM_COUNT],
            )
            if response[0] == 0:
                raise _replaced(response[1])
            claimed += len(response[2])
            start = _text(response[1])
            if start == "0-0":
                break
        for consumer in await self._redis.xinfo_consumers(self.keys.stream, GROUP):
            name = _text(consumer["name"])
            if name != self.consumer and int(consumer["pending"]) == 0:
                await self._redis.xgroup_delconsumer(self.keys.stream, GROUP, name)
        return claimed

    async def announce(
        self, max_queue_size: int, max_batch: int, status: dict[str, int | str]
    ) -> None:
        """Publish ``max_queue_size`` and ``max_batch`` (twice: ``columnar_batch`` says columnar
        entries are read) for producers and start a fresh status
        hash (one script: its first write, renewing the lease, is one Redis allows at
        maxmemory, so a writer starting against a full Redis still gets to serve and free
        it)."""
        now_ms = int(time.time() * 1000)
        fields: dict[str, int | str] = {
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
            "ignored": 0,
            "dead_letters": 0,
        }
        fields.update(status)
        response: Any = await self._announce(
            keys=[self.keys.stream, self.keys.lease, self.keys.config, self.keys.writer],
            args=[
                *self._lease_args,
                CONFIG_MAX_QUEUE_SIZE,
                max_queue_size,
                CONFIG_MAX_BATCH,
                max_batch,
                CONFIG_COLUMNAR_BATCH,
                max_batch,
                CONFIG_PROTOCOL,
                HIGHEST_VERSION,
                *[part for pair in fields.items() for part in pair],
            ],
        )
        if response and response[0] == 0:
            raise _replaced(response[1])

    async def retire(self) -> None:
        """Mark the status hash stopped."""
        await self._redis.hset(
            self.keys.writer,
            mapping={"state": "stopped", "stopped_at_ms": int(time.time() * 1000)},
        )


def _pairs(fields: list[bytes] | None) -> dict[bytes, bytes] | None:
    if fields is None:
        return None
    return dict(zip(fields[::2], fields[1::2], strict=True))


def _replaced(holder: Any) -> WriterReplaced:
    return WriterReplaced(f"writer {_text(holder).split(' ')[0]} holds the lease now")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
