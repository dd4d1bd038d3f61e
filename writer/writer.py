"""The writer: the one process that owns a table and appends coalesced batches to it."""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from lancequeue.common.backoff import Backoff
from lancequeue.common.connection import resolve_redis_url
from lancequeue.common.errors import ConfigError
from lancequeue.common.keys import GROUP, TableKeys
from lancequeue.common.protocol import CONFIG_MAX_QUEUE_SIZE, error_payload
from lancequeue.writer.coalesce import Coalescer
from lancequeue.writer.entries import Entry, read_entry
from lancequeue.writer.liveness import Heartbeat
from lancequeue.writer.loading import load_object
from lancequeue.writer.replies import ErrorPayload, ack_and_answer
from lancequeue.writer.settings import WriterSettings
from lancequeue.writer.sink import TableSink

logger = logging.getLogger(__name__)

RawEntry = tuple[bytes, dict[bytes, bytes] | None]
_TRANSIENT = (RedisConnectionError, RedisTimeoutError, OSError)
_CLAIM_COUNT = 1000


class Writer:
    """Owns one LanceDB table: reads the table's stream, appends one batch per flush, acks and
    answers every record.

    Embed it in asyncio code::

        writer = Writer(table="docs", redis_url="redis://localhost:6379", db_uri="./db")
        task = asyncio.create_task(writer.run())
        ...
        await writer.stop()     # flushes what is in hand, acks, answers

    Run exactly one writer per table.
    """

    def __init__(self, settings: WriterSettings | None = None, **kwargs: Any) -> None:
        self.settings = settings if settings is not None else WriterSettings(**kwargs)
        self.keys = TableKeys(self.settings.table)
        self.consumer = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._on_flushed = _resolve_hook(self.settings.on_flushed)
        self._stop_event = asyncio.Event()
        self._heartbeat_holder: Heartbeat | None = None
        self._running = False
        self._finished: asyncio.Event | None = None
        self._redis: aioredis.Redis | None = None
        self._sink: TableSink | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve until ``stop()``: on return, every record read was flushed, acked and answered."""
        self._finished = asyncio.Event()
        self._running = True
        settings = self.settings
        try:
            url = await asyncio.to_thread(
                resolve_redis_url, settings.redis_url, settings.resolved_data_dir
            )
            self._redis = aioredis.Redis.from_url(url)
            self._sink = await TableSink.open(
                settings.resolved_db_uri,
                settings.table,
                settings.schema,
                settings.metadata_cache_bytes,
            )
            self._heartbeat_holder = Heartbeat(
                self._redis, self.keys, self.consumer, settings.heartbeat_ms
            )
            if not await self._heartbeat_holder.acquire(self._stop_event):
                return
            await self._ensure_group()
            await self._announce()
            stop_heartbeat = asyncio.Event()
            heartbeat = asyncio.create_task(
                self._heartbeat(stop_heartbeat), name="lancequeue-heartbeat"
            )
            try:
                await self._claim_orphans()
                logger.info(
                    "writer %s serving table %r (coalesce %d ms, max batch %d)",
                    self.consumer,
                    settings.table,
                    settings.coalesce_ms,
                    settings.max_batch,
                )
                await self._serve()
            finally:
                # Not cancel(): a cancellation landing inside a redis-py call can be swallowed,
                # leaving the task alive forever.
                stop_heartbeat.set()
                await heartbeat
                await self._retire()
            logger.info("writer %s stopped", self.consumer)
        finally:
            self._running = False
            if self._redis is not None:
                await self._redis.aclose()
            self._finished.set()

    def request_stop(self) -> None:
        """Ask ``run()`` to stop reading, flush what it holds, and return (warm stop)."""
        self._stop_event.set()

    async def stop(self) -> None:
        """Warm stop, waiting until ``run()`` has returned. Idempotent."""
        self.request_stop()
        if self._running and self._finished is not None:
            await self._finished.wait()

    # -- the coalesce loop -------------------------------------------------------------------

    async def _serve(self) -> None:
        coalescer: Coalescer[RawEntry] = Coalescer(
            self.settings.coalesce_ms, self.settings.max_batch, self.settings.max_block_ms
        )
        # Entries this consumer read before and never acked (a crash, or claimed from a dead
        # writer) come first: read them from our pending list, then switch to new entries.
        position = "0"
        backoff = Backoff()
        while not self._stop_event.is_set():
            if coalescer.due():
                await self._flush(coalescer.take())
                continue
            try:
                entries = await self._read(position, coalescer.room, coalescer.block_ms())
                backoff.reset()
            except _TRANSIENT as exc:
                delay = backoff.next_delay()
                logger.warning("redis unreachable (%s); retrying in %.2fs", exc, delay)
                await asyncio.sleep(delay)
                continue
            if position != ">":
                if not entries:
                    position = ">"
                    continue
                position = entries[-1][0].decode()
            coalescer.add(entries)
        if len(coalescer):
            logger.info("stopping: flushing %d records in hand", len(coalescer))
            await self._flush(coalescer.take())

    async def _read(self, position: str, count: int, block_ms: int) -> list[RawEntry]:
        assert self._redis is not None
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
            logger.warning("stream or group of %r vanished; recreating it", self.settings.table)
            await self._ensure_group()
            return []
        if not response:
            return []
        entries: list[RawEntry] = response[0][1]
        return entries

    # -- one flush ---------------------------------------------------------------------------

    async def _flush(self, raw_entries: list[RawEntry]) -> None:
        assert self._sink is not None
        entries = [
            read_entry(self.keys, entry_id, fields or {}) for entry_id, fields in raw_entries
        ]
        answers: dict[bytes, ErrorPayload] = {}
        writable: list[Entry] = []
        for entry in entries:
            if entry.reply_key is None:
                continue  # logged when read; acked below, never written nor answered
            if entry.record is None:
                answers[entry.entry_id] = error_payload(
                    "RecordRejected", entry.rejection or "rejected", "RecordRejected"
                )
            else:
                writable.append(entry)
        landed: list[Entry] = []
        failed = 0
        if writable:
            landed, failed = await self._append(writable, answers)
        if landed:
            await self._call_on_flushed(
                [entry.record for entry in landed if entry.record is not None]
            )
        increments = {
            "batches": 1 if landed else 0,
            "rows": len(landed),
            "rejected": len(answers) - failed,
            "failed": failed,
        }
        values = {"table_rows": self._sink.rows, "table_version": self._sink.version}
        await self._with_retry(
            lambda: ack_and_answer(
                self._redis_client,
                self.keys,
                entries,
                answers,
                self.settings.reply_ttl_ms,
                increments,
                values,
            )
        )
        logger.debug(
            "flushed %d entries: %d written, %d rejected, %d failed",
            len(entries),
            len(landed),
            increments["rejected"],
            failed,
        )

    async def _append(
        self, writable: list[Entry], answers: dict[bytes, ErrorPayload]
    ) -> tuple[list[Entry], int]:
        """Append the writable records in one commit; fill ``answers`` with the rejected and,
        if the append raised, failed ones. Returns the entries that landed and the failures."""
        assert self._sink is not None
        try:
            batch, rejected = await self._sink.prepare(
                [entry.record for entry in writable if entry.record is not None]
            )
            for index, reason in rejected.items():
                answers[writable[index].entry_id] = error_payload(
                    "RecordRejected", reason, "RecordRejected"
                )
            if batch is None:
                return [], 0
            await self._sink.append(batch)
        except Exception as exc:  # any append failure is answered, never kills the writer
            logger.error(
                "append of %d records to %r failed: %s: %s",
                len(writable),
                self.settings.table,
                type(exc).__name__,
                exc,
            )
            failed = 0
            for entry in writable:
                if entry.entry_id not in answers:
                    answers[entry.entry_id] = error_payload(
                        "WriteFailed", str(exc), type(exc).__name__
                    )
                    failed += 1
            return [], failed
        return [entry for index, entry in enumerate(writable) if index not in rejected], 0

    async def _call_on_flushed(self, records: list[dict[str, Any]]) -> None:
        if self._on_flushed is None:
            return
        try:
            outcome = self._on_flushed(records)
            if inspect.isawaitable(outcome):
                await outcome
        except Exception:  # the hook never breaks the write path
            logger.exception("on_flushed hook raised; ignored")

    # -- redis bookkeeping -------------------------------------------------------------------

    @property
    def _redis_client(self) -> aioredis.Redis:
        assert self._redis is not None
        return self._redis

    async def _with_retry(self, operation: Callable[[], Any]) -> None:
        """Run a Redis operation until it succeeds, backing off while Redis is unreachable."""
        backoff = Backoff()
        while True:
            try:
                await operation()
                return
            except _TRANSIENT as exc:
                delay = backoff.next_delay()
                logger.warning("redis unreachable (%s); retrying in %.2fs", exc, delay)
                await asyncio.sleep(delay)

    async def _ensure_group(self) -> None:
        try:
            await self._redis_client.xgroup_create(self.keys.stream, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _announce(self) -> None:
        assert self._sink is not None
        now_ms = int(time.time() * 1000)
        async with self._redis_client.pipeline(transaction=True) as pipe:
            pipe.hset(self.keys.config, CONFIG_MAX_QUEUE_SIZE, self.settings.max_queue_size)
            pipe.delete(self.keys.writer)
            pipe.hset(
                self.keys.writer,
                mapping={
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
                    "table_rows": self._sink.rows,
                    "table_version": self._sink.version,
                    "db_uri": self.settings.resolved_db_uri,
                },
            )
            await pipe.execute()

    async def _heartbeat(self, stop: asyncio.Event) -> None:
        assert self._heartbeat_holder is not None
        while True:
            try:
                await asyncio.wait_for(stop.wait(), self._heartbeat_holder.interval_s)
                return
            except asyncio.TimeoutError:
                pass
            try:
                if not await self._heartbeat_holder.beat():
                    logger.error(
                        "another writer took table %r's heartbeat (this one stalled longer "
                        "than its expiry); stopping",
                        self.settings.table,
                    )
                    self.request_stop()
                    return
            except _TRANSIENT as exc:
                logger.warning("heartbeat failed: %s", exc)

    async def _retire(self) -> None:
        try:
            async with self._redis_client.pipeline(transaction=True) as pipe:
                pipe.hset(
                    self.keys.writer,
                    mapping={"state": "stopped", "stopped_at_ms": int(time.time() * 1000)},
                )
                await pipe.execute()
            assert self._heartbeat_holder is not None
            await self._heartbeat_holder.release()
        except _TRANSIENT as exc:
            logger.warning("could not record the stop in redis: %s", exc)

    async def _claim_orphans(self) -> None:
        """Take over entries left pending by writers that are gone (crashed): they are replayed
        from this writer's pending list before any new entry."""
        start = "0-0"
        claimed = 0
        while True:
            response = await self._redis_client.xautoclaim(
                self.keys.stream,
                GROUP,
                self.consumer,
                min_idle_time=0,
                start_id=start,
                count=_CLAIM_COUNT,
            )
            start_raw, entries = response[0], response[1]
            claimed += len(entries)
            start = start_raw.decode() if isinstance(start_raw, bytes) else str(start_raw)
            if start == "0-0":
                break
        if claimed:
            logger.info("replaying %d entries left pending by an earlier writer", claimed)
        # Earlier writers' consumers now own nothing: forget them, so the group does not grow
        # by one consumer per restart.
        for consumer in await self._redis_client.xinfo_consumers(self.keys.stream, GROUP):
            name = consumer["name"]
            name = name.decode() if isinstance(name, bytes) else str(name)
            if name != self.consumer and int(consumer["pending"]) == 0:
                await self._redis_client.xgroup_delconsumer(self.keys.stream, GROUP, name)


def _resolve_hook(hook: str | Callable[..., Any] | None) -> Callable[..., Any] | None:
    if hook is None or callable(hook):
        return hook
    loaded = load_object(hook, "--on-flushed")
    if not callable(loaded):
        raise ConfigError(f"--on-flushed {hook!r} is not callable")
    return loaded  # type: ignore[no-any-return]
