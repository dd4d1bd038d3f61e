"""The writer: the one process that owns a table and appends coalesced batches to it."""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from lancequeue.common.backoff import Backoff
from lancequeue.common.connection import resolve_redis_url
from lancequeue.common.errors import ConfigError, WriterReplaced
from lancequeue.common.keys import TableKeys
from lancequeue.common.protocol import error_payload
from lancequeue.writer.coalesce import Coalescer
from lancequeue.writer.entries import Entry, read_entry
from lancequeue.writer.liveness import Beat, Heartbeat
from lancequeue.writer.loading import load_object
from lancequeue.writer.replies import Outcome, ack_and_answer
from lancequeue.writer.settings import WriterSettings
from lancequeue.writer.sink import TableSink, resolve_schema
from lancequeue.writer.stream_group import RawEntry, StreamGroup

logger = logging.getLogger(__name__)

_TRANSIENT = (RedisConnectionError, RedisTimeoutError, OSError)
_CLAIM_EVERY_BEATS = 10
"""While idle, look for entries left pending by dead writers every this many heartbeats."""


class Writer:
    """Owns one LanceDB table: reads the table's stream, appends one batch per flush, acks and
    answers every record.

    Embed it in asyncio code::

        writer = Writer(table="docs", redis_url="redis://localhost:6379", db_uri="./db")
        task = asyncio.create_task(writer.run())
        ...
        await writer.stop()     # flushes what is in hand, acks, answers

    A second writer for the same table waits until the first one is gone.
    """

    def __init__(self, settings: WriterSettings | None = None, **kwargs: Any) -> None:
        self.settings = settings if settings is not None else WriterSettings(**kwargs)
        self.keys = TableKeys(self.settings.table)
        self.consumer = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._on_flushed = _resolve_hook(self.settings.on_flushed)
        self._schema = resolve_schema(self.settings.schema)
        self._stop_event = asyncio.Event()
        self._replaced = False
        self._running = False
        self._finished: asyncio.Event | None = None
        self._sink: TableSink | None = None
        self._group: StreamGroup | None = None
        self._redis: aioredis.Redis | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve until ``stop()``: on return, every record read was flushed, acked and answered.

        Raises ``WriterReplaced`` if another writer took the table over while this one stalled.
        """
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
                self._schema,
                settings.metadata_cache_bytes,
            )
            heartbeat = Heartbeat(self._redis, self.keys, self.consumer, settings.heartbeat_ms)
            if not await heartbeat.acquire(self._stop_event):
                return
            self._group = StreamGroup(self._redis, self.keys, self.consumer)
            await self._group.ensure()
            await self._group.announce(
                settings.max_queue_size,
                {**self._table_status(), "db_uri": settings.resolved_db_uri},
            )
            beating = asyncio.Event()
            beater = asyncio.create_task(self._beat(heartbeat, beating), name="lancequeue-beat")
            try:
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
                beating.set()
                await beater
                if not self._replaced:
                    await self._retire(heartbeat)
            if self._replaced:
                raise WriterReplaced(
                    f"another writer took table {settings.table!r} over while {self.consumer} "
                    "stalled; it stopped without flushing (its entries stay pending)"
                )
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
        group = self._group
        assert group is not None
        coalescer: Coalescer[RawEntry] = Coalescer(
            self.settings.coalesce_ms, self.settings.max_batch, self.settings.max_block_ms
        )
        # Entries left pending by earlier writers (crashed, or replaced) come first: claim them,
        # read them from this consumer's pending list, then switch to new entries.
        claimed = await self._with_retry(lambda: group.claim_orphans(0))
        if claimed:
            logger.info("replaying %d entries left pending by an earlier writer", claimed)
        position = "0"
        next_claim_at = time.monotonic() + self._claim_interval_s
        backoff = Backoff()
        while not self._stop_event.is_set():
            if coalescer.due():
                await self._flush(coalescer.take())
                continue
            if not len(coalescer) and position == ">" and time.monotonic() >= next_claim_at:
                # Only with no batch in hand: this consumer's pending list is empty then, so
                # reading it from "0" returns just what was claimed.
                next_claim_at = time.monotonic() + self._claim_interval_s
                if await self._with_retry(lambda: group.claim_orphans(self._orphan_idle_ms)):
                    logger.info("replaying entries left pending by a replaced writer")
                    position = "0"
            try:
                entries = await group.read(position, coalescer.room, coalescer.block_ms())
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
        if len(coalescer) and not self._replaced:
            logger.info("stopping: flushing %d records in hand", len(coalescer))
            await self._flush(coalescer.take())

    @property
    def _claim_interval_s(self) -> float:
        return _CLAIM_EVERY_BEATS * self.settings.heartbeat_ms / 1000

    @property
    def _orphan_idle_ms(self) -> int:
        return 2 * 3 * self.settings.heartbeat_ms  # twice the heartbeat expiry

    # -- one flush ---------------------------------------------------------------------------

    async def _flush(self, raw_entries: list[RawEntry]) -> None:
        if self._replaced:
            return  # the new writer replays these entries; appending them here would duplicate
        sink = self._sink
        assert sink is not None
        entries = [
            read_entry(self.keys, entry_id, fields or {}) for entry_id, fields in raw_entries
        ]
        outcomes: dict[bytes, Outcome] = {}
        writable: list[Entry] = []
        for entry in entries:
            if entry.reply_key is None:
                continue  # logged when read; acked below, never written nor answered
            if entry.record is None:
                outcomes[entry.entry_id] = _rejected(entry.rejection or "rejected")
            else:
                writable.append(entry)
        landed: list[Entry] = []
        failed = 0
        if writable:
            landed, failed = await self._append(writable, outcomes)
        if landed:
            await self._call_on_flushed(
                [entry.record for entry in landed if entry.record is not None]
            )
        increments = {
            "batches": 1 if landed else 0,
            "rows": len(landed),
            "rejected": len(outcomes) - failed,
            "failed": failed,
        }
        await self._with_retry(
            lambda: ack_and_answer(
                self._redis_client,
                self.keys,
                entries,
                outcomes,
                self.settings.reply_ttl_ms,
                increments,
                self._table_status(),
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
        self, writable: list[Entry], outcomes: dict[bytes, Outcome]
    ) -> tuple[list[Entry], int]:
        """Append the writable records in one commit; fill ``outcomes`` with the rejected and,
        if the append raised, failed ones. Returns the entries that landed and the failures."""
        assert self._sink is not None
        records = [entry.record for entry in writable if entry.record is not None]
        try:
            batch, rejected = await self._sink.prepare(records)
            for index, reason in rejected.items():
                outcomes[writable[index].entry_id] = _rejected(reason)
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
                if entry.entry_id not in outcomes:
                    outcomes[entry.entry_id] = error_payload(
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

    def _table_status(self) -> dict[str, int | str]:
        """The table's row count and version, recorded in the status hash after each flush."""
        assert self._sink is not None
        return {"table_rows": self._sink.rows, "table_version": self._sink.version}

    async def _with_retry(self, operation: Callable[[], Awaitable[Any]]) -> Any:
        """Run a Redis operation until it succeeds. Unreachable Redis is waited out; other
        Redis errors (out of memory, a read-only replica) are logged and retried too, since
        giving up here would replay, and so append again, records already in the table."""
        backoff = Backoff()
        while True:
            try:
                return await operation()
            except (*_TRANSIENT, RedisError) as exc:
                delay = backoff.next_delay()
                logger.warning("redis: %s: %s; retrying in %.2fs", type(exc).__name__, exc, delay)
                await asyncio.sleep(delay)

    async def _beat(self, heartbeat: Heartbeat, stop: asyncio.Event) -> None:
        while True:
            try:
                await asyncio.wait_for(stop.wait(), heartbeat.interval_s)
                return
            except asyncio.TimeoutError:
                pass
            try:
                state = await heartbeat.beat()
            except (*_TRANSIENT, RedisError) as exc:
                logger.warning("heartbeat failed: %s: %s", type(exc).__name__, exc)
                continue
            if state is Beat.RETAKEN:
                logger.warning("table %r's heartbeat had vanished; retaken", self.settings.table)
            elif state is Beat.LOST:
                logger.error(
                    "writer %s now holds table %r (this writer stalled past its heartbeat "
                    "expiry); stopping without flushing",
                    await heartbeat.holder(),
                    self.settings.table,
                )
                self._replaced = True
                self.request_stop()
                return

    async def _retire(self, heartbeat: Heartbeat) -> None:
        assert self._group is not None
        try:
            await self._group.retire()
            await heartbeat.release()
        except (*_TRANSIENT, RedisError) as exc:
            logger.warning("could not record the stop in redis: %s", exc)


def _rejected(reason: str) -> Outcome:
    return error_payload("RecordRejected", reason, "RecordRejected")


def _resolve_hook(hook: str | Callable[..., Any] | None) -> Callable[..., Any] | None:
    if hook is None or callable(hook):
        return hook
    loaded = load_object(hook, "--on-flushed")
    if not callable(loaded):
        raise ConfigError(f"--on-flushed {hook!r} is not callable")
    return loaded  # type: ignore[no-any-return]
