"""The writer: the one process that owns a table and appends coalesced batches to it."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from redis.exceptions import AuthenticationError, NoPermissionError

from lancequeue.common.backoff import Backoff
from lancequeue.common.connection import resolve_redis_url
from lancequeue.common.errors import ConfigError, WriterReplaced
from lancequeue.common.keys import TableKeys
from lancequeue.common.protocol import error_payload
from lancequeue.common.redis_client import (
    REDIS_FAILURES,
    UNREACHABLE,
    AsyncRedis,
    async_client,
    is_cluster_url_async,
)
from lancequeue.writer.batch_context import BatchContextReader
from lancequeue.writer.coalesce import Coalescer
from lancequeue.writer.compaction import CompactionPolicy, compaction_target
from lancequeue.writer.dedupe import SeenSequences
from lancequeue.writer.entries import Entry, read_entries, record_count
from lancequeue.writer.faults import crash_point
from lancequeue.writer.flush import BatchSettler, PreparedBatch, RetryPolicy, Settlement
from lancequeue.writer.lease import Lease, Renewal
from lancequeue.writer.loading import load_object
from lancequeue.writer.metrics import TableMetrics, WriterMetrics, entry_arrivals_ms
from lancequeue.writer.pipeline import Answered, FlushPipeline
from lancequeue.writer.replies import Acknowledgement, DeadLetter, ack_and_answer
from lancequeue.writer.settings import WriterSettings
from lancequeue.writer.sink import TableSink, resolve_schema
from lancequeue.writer.stream_group import RawEntry, StreamGroup
from lancequeue.writer.summary import Summary
from lancequeue.writer.watermark import Watermark

logger = logging.getLogger(__name__)

_CLAIM_EVERY_RENEWALS = 10
"""While idle, look for entries left pending by replaced writers every this many renewals."""
_ISOLATE_AFTER_DELIVERIES = 3
"""An entry read this often without being settled may be what kills the writer: it is written
in a batch of its own, so its batch-mates land before it is tried."""


class Writer:
    """Owns one LanceDB table: reads the table's stream, appends one batch per flush, acks and
    answers every record.

    Embed it in asyncio code::

        writer = Writer(table="docs", redis_url="redis://localhost:6379", db_uri="./db")
        task = asyncio.create_task(writer.run())
        ...
        await writer.stop()     # flushes what is in hand, acks, answers

    A second writer for the same table stands by until the first one's lease expires, then
    takes over: it replays what the first left pending, writing none of it twice.
    """

    def __init__(
        self,
        settings: WriterSettings | None = None,
        metrics: WriterMetrics | None = None,
        **kwargs: Any,
    ) -> None:
        self.settings = settings if settings is not None else WriterSettings(**kwargs)
        # Shared by the writers of one process; else its own if metrics_port is set.
        self._shared_metrics = metrics
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
        self._redis: AsyncRedis | None = None
        self._batch_context_reader: BatchContextReader | None = None
        self._lease: Lease | None = None
        self._settler: BatchSettler | None = None
        self._seen: SeenSequences | None = None
        self._redis_clock_offset_ms = 0.0
        self._summary = Summary()
        self._metrics: TableMetrics | None = None
        self._own_metrics: WriterMetrics | None = None
        self._compaction = CompactionPolicy.parse(self.settings.compact_every)
        self._next_compaction_check = 0.0
        self._compacting: asyncio.Task[None] | None = None
        self._pipeline: FlushPipeline[PreparedBatch, _Flushed] = FlushPipeline(
            self._append, self._answer, self._after_append
        )

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
            cluster = await is_cluster_url_async(url)
            self._redis = async_client(url, cluster)
            self._batch_context_reader = BatchContextReader(self._redis, self.keys)
            if self._shared_metrics is not None:
                self._metrics = self._shared_metrics.table(settings.table, url, cluster)
            elif settings.metrics_port:
                self._own_metrics = WriterMetrics()
                self._metrics = self._own_metrics.table(settings.table, url, cluster)
                self._own_metrics.serve(settings.metrics_port)
            self._sink = await TableSink.open(
                settings.resolved_db_uri,
                settings.table,
                self._schema,
                settings.metadata_cache_bytes,
                settings.storage_options,
                settings.bad_vectors,
            )
            lease = Lease(self._redis, self.keys, self.consumer, settings.lease_ms)
            self._lease = lease
            if not await lease.acquire(self._stop_event, self._sink.table_fence):
                return
            renewing = asyncio.Event()
            renewer = asyncio.create_task(self._renew(lease, renewing), name="lancequeue-lease")
            try:
                self._group = StreamGroup(self._redis, self.keys, lease)
                await self._group.ensure()
                watermark = await self._sink.fence(lease.token, self.consumer)
                self._seen = SeenSequences(self._redis, self.keys)
                self._settler = BatchSettler(
                    self._sink,
                    self._seen,
                    RetryPolicy(settings.flush_retries, settings.retry_backoff_ms),
                )
                await self._group.announce(
                    settings.max_queue_size,
                    settings.max_batch,
                    {**self._table_status(), "db_uri": settings.resolved_db_uri},
                )
                logger.info(
                    "writer %s serving table %r (token %d, coalesce %d ms, max batch %d)",
                    self.consumer,
                    settings.table,
                    lease.token,
                    settings.coalesce_ms,
                    settings.max_batch,
                )
                summaries = asyncio.create_task(self._log_summaries(), name="lancequeue-summary")
                if self._metrics is not None:
                    self._metrics.lease_held(True)
                try:
                    await self._serve(watermark)
                finally:
                    summaries.cancel()  # it only logs: no Redis call to interrupt
                    if self._metrics is not None:
                        self._metrics.lease_held(False)
            except WriterReplaced:
                self._replaced = True
            except _RedisGaveUp as exc:
                logger.error(
                    "stopping while Redis fails (%s): entries not acked stay pending for the next "
                    "writer",
                    exc,
                )
            finally:
                # Not cancel(): a cancellation landing inside a redis-py call can be swallowed,
                # leaving the task alive forever.
                renewing.set()
                await renewer
                if not self._replaced:
                    await self._retire(lease)
            if self._replaced:
                raise WriterReplaced(
                    f"another writer took table {settings.table!r} over while {self.consumer} "
                    "stalled; it stopped without flushing (its entries stay pending)"
                )
            logger.info("writer %s stopped", self.consumer)
        except (AuthenticationError, NoPermissionError) as exc:
            raise ConfigError(f"redis refused the writer: {exc} (check its ACL user)") from exc
        finally:
            self._running = False
            if self._own_metrics is not None:
                self._own_metrics.close()
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

    async def _serve(self, watermark: Watermark | None) -> None:
        try:
            await self._coalesce_loop(watermark)
            await self._pipeline.drain()
        except BaseException:
            self.request_stop()  # so that Redis calls still retrying give up
            await self._pipeline.abandon()
            raise
        finally:
            if self._compacting is not None:
                await self._compacting  # never raises: compaction failures are logged

    async def _coalesce_loop(self, watermark: Watermark | None) -> None:
        group = self._group
        assert group is not None
        # Entries left pending by earlier writers (crashed, or replaced) come first: those the
        # table already holds are answered from the watermark, the others written.
        await self._with_retry(self._redis_now_ms)  # the clock offset batch windows rely on
        claimed = await self._with_retry(lambda: group.claim_orphans(0))
        if claimed:
            logger.info("replaying %d entries left pending by an earlier writer", claimed)
        await self._replay_pending(watermark)
        coalescer: Coalescer[RawEntry] = Coalescer(
            self.settings.coalesce_ms,
            self.settings.max_batch,
            self.settings.max_block_ms,
            max_bytes=self.settings.max_batch_bytes,
            size=_entry_bytes,
            count=lambda entry: record_count(entry[1]),
        )
        next_claim_at = time.monotonic() + self._claim_interval_s
        backoff = Backoff()
        read_lost = False
        last_read = "0"  # the last entry read; everything up to it is in hand or settled
        topped_up = False  # the batch due in hand had its read that does not wait
        while not self._stop_event.is_set():
            top_up = coalescer.due()
            if top_up and (topped_up or coalescer.full()):
                await self._flush(coalescer.take())
                topped_up = False
                continue
            if not len(coalescer) and time.monotonic() >= next_claim_at:
                # Only with no batch in hand: this consumer's pending list is empty then, so
                # replaying it covers just what was claimed.
                next_claim_at = time.monotonic() + self._claim_interval_s
                # Batches in flight are pending too: settle them before replaying the list.
                await self._pipeline.drain()
                if await self._with_retry(lambda: group.claim_orphans(self._orphan_idle_ms)):
                    logger.info("replaying entries left pending by a replaced writer")
                    await self._replay_pending(None)
                continue
            try:
                if read_lost:
                    # A read whose reply was lost still delivered its entries to this consumer:
                    # they are pending after the last entry in hand. Take them first, so entries
                    # are handled in stream order.
                    entries = await group.read_pending(last_read, coalescer.room)
                    read_lost = bool(entries)
                else:
                    # A batch due by its window takes what else is waiting, without waiting.
                    block_ms = None if top_up else coalescer.block_ms()
                    entries = await group.read_new(coalescer.room, block_ms)
                    topped_up = top_up
                backoff.reset()
            except (AuthenticationError, NoPermissionError):
                raise  # a configuration error: retrying cannot help
            except UNREACHABLE as exc:
                read_lost = True
                delay = backoff.next_delay()
                logger.warning("redis unreachable (%s); retrying in %.2fs", exc, delay)
                await asyncio.sleep(delay)
                continue
            if entries:
                last_read = entries[-1][0].decode()
                coalescer.add(entries, self._waited_s(entries[0][0]))
        if len(coalescer) and not self._replaced:
            logger.info("stopping: flushing %d records in hand", len(coalescer))
        while len(coalescer) and not self._replaced:
            await self._flush(coalescer.take())

    async def _replay_pending(self, watermark: Watermark | None) -> None:
        """Settle this consumer's pending entries (claimed from earlier writers)."""
        group = self._group
        assert group is not None
        position = "0"
        while not self._replaced:
            raw: list[RawEntry] = await self._with_retry(
                functools.partial(group.read_pending, position, self.settings.max_batch)
            )
            if not raw:
                return
            position = raw[-1][0].decode()
            ids = [entry_id for entry_id, _ in raw]
            deliveries = await self._with_retry(functools.partial(group.deliveries, ids))
            if watermark is not None:
                covered = [r for r in raw if watermark.covers(group.epoch, r[0])]
                if covered:
                    await self._settle_from_watermark(covered, watermark)
                raw = [r for r in raw if not watermark.covers(group.epoch, r[0])]
            # In stream order, so each commit's watermark covers only settled entries.
            batch: list[RawEntry] = []
            for item in raw:
                count = deliveries.get(item[0], 1)
                if count < _ISOLATE_AFTER_DELIVERIES:
                    batch.append(item)
                    continue
                if batch:
                    await self._flush(batch)
                    batch = []
                await self._flush([item], count)
            if batch:
                await self._flush(batch)

    @property
    def _claim_interval_s(self) -> float:
        return _CLAIM_EVERY_RENEWALS * self.settings.lease_ms / 4000

    @property
    def _orphan_idle_ms(self) -> int:
        return 2 * self.settings.lease_ms

    # -- one flush ---------------------------------------------------------------------------

    def _read(self, raw_entries: list[RawEntry]) -> list[Entry]:
        """The records of the entries, in stream order."""
        return [
            entry
            for entry_id, fields in raw_entries
            for entry in read_entries(
                self.keys, entry_id, fields or {}, self.settings.max_record_bytes
            )
        ]

    async def _flush(self, raw_entries: list[RawEntry], deliveries: int = 1) -> None:
        """Build the batch now (while the one before may still be appending) and hand it to
        the pipeline, which appends it after the one before, then answers it."""
        if self._replaced:
            return  # the new writer replays these entries; appending them here would duplicate
        entries = self._read(raw_entries)
        if deliveries > self.settings.max_deliveries:
            await self._pipeline.drain()
            await self._dead_letter(entries, deliveries)
            return
        prepared = await self._prepare(entries)
        if prepared is not None:
            await self._pipeline.submit(prepared)

    async def _prepare(self, entries: list[Entry]) -> PreparedBatch | None:
        assert self._settler is not None
        producers = {entry.producer_id for entry in entries if entry.producer_id is not None}
        try:
            now_ms = await self._with_retry(functools.partial(self._batch_context, producers))
            return await self._settler.prepare(entries, now_ms, self._stream_group.epoch)
        except WriterReplaced as exc:
            self._stop_replaced(exc)
            return None

    async def _batch_context(self, producers: set[str]) -> int:
        """One round trip before building a batch: Redis time (the batch's build time, which
        deadlines are checked against), the lease (raises ``WriterReplaced`` if another writer
        holds it), and the settled sequence numbers of producers not cached yet."""
        lease = self._lease
        assert lease is not None
        seen = self._seen_sequences
        missing = seen.missing(producers)
        assert self._batch_context_reader is not None
        context = await self._batch_context_reader.read(seen.keys_of(missing) if missing else [])
        self._redis_clock_offset_ms = context.now_ms - time.time() * 1000
        if context.lease_holder not in (lease.value, None):
            raise WriterReplaced(f"writer {context.lease_holder} holds the lease")
        if missing:
            seen.remember(missing, list(context.seen))
        return context.now_ms

    async def _append(self, prepared: PreparedBatch, answered: Answered) -> _Flushed | None:
        """The table lane's part of a flush: the append (None if this writer was replaced),
        committed once the batches before it are answered."""
        assert self._settler is not None
        if self._replaced:
            return None
        try:
            settlement = await self._settler.land(prepared, answered)
        except WriterReplaced as exc:
            self._stop_replaced(exc)
            return None
        if settlement.commits:
            crash_point("after_commit")
        return _Flushed(prepared.entries, settlement, self._compaction_due(settlement))

    def _compaction_due(self, settlement: Settlement) -> int | None:
        """The row count to compact towards after this flush, or None."""
        policy = self._compaction
        now = time.monotonic()
        if not policy.enabled or not settlement.commits or now < self._next_compaction_check:
            return None
        if self._compacting is not None and not self._compacting.done():
            return None
        self._next_compaction_check = now + policy.interval_s
        assert self._sink is not None
        return compaction_target(self._sink.fragment_rows(), self.settings.max_batch, policy.fanout)

    async def _answer(self, flushed: _Flushed) -> None:
        """The answer lane's part of a flush: the hook, then ack and answer."""
        settlement = flushed.settlement
        if settlement.landed:
            await self._call_on_flushed(settlement.landed)
        await self._acknowledge(flushed.entries, settlement.answers, _increments(settlement))
        crash_point("after_ack")

    async def _after_append(self, flushed: _Flushed) -> None:
        """Housekeeping after an append: start a compaction if one is due and none is running.
        It runs beside the appends (a Lance ``Rewrite`` commits over concurrent appends), so
        no batch waits for it."""
        target = flushed.compact_to_rows
        if target is not None and (self._compacting is None or self._compacting.done()):
            self._compacting = asyncio.create_task(
                self._compact(target), name="lancequeue-compaction"
            )

    def _stop_replaced(self, exc: WriterReplaced) -> None:
        logger.error("%s; stopping without flushing", exc)
        self._replaced = True
        self.request_stop()

    async def _log_summaries(self) -> None:
        """Every ``summary_every_s``, one log line of what the writer did meanwhile."""
        interval_s = self.settings.summary_every_s
        if not interval_s:
            return
        while True:
            await asyncio.sleep(interval_s)  # a reporting period, not a synchronisation
            logger.info("table %r: %s", self.keys.table, self._summary.line())

    async def _settle_from_watermark(self, raw: list[RawEntry], watermark: Watermark) -> None:
        """Ack and answer entries an earlier writer committed but did not ack: never again
        written. The watermark says which of them were written and what the others got."""
        entries = self._read(raw)
        answers = {entry.record_id: watermark.outcome(entry.record_id) for entry in entries}
        written = [entry for entry in entries if answers[entry.record_id] is None]
        logger.info(
            "%d pending entries are in the table already (watermark %s): answering, not writing",
            len(written),
            watermark.last_id,
        )
        if written:
            await self._call_on_flushed(written)
        assert self._seen is not None
        for entry in entries:
            if entry.producer_id is not None:
                self._seen.advance(entry.producer_id, entry.seq)
        await self._acknowledge(entries, answers, {"recovered": len(written)})

    async def _dead_letter(self, entries: list[Entry], deliveries: int) -> None:
        reason = (
            f"read {deliveries} times without being settled (max_deliveries is "
            f"{self.settings.max_deliveries}): the writer died each time it held it"
        )
        logger.error("moving %d entries to the dead-letter stream: %s", len(entries), reason)
        answers = {
            entry.record_id: error_payload(
                "WriteFailed", f"moved to dead letters: {reason}", "dead"
            )
            for entry in entries
        }
        dead = [DeadLetter(entry, deliveries, reason) for entry in entries]
        await self._acknowledge(entries, answers, {"dead_letters": len(entries)}, dead)

    async def _acknowledge(
        self,
        entries: list[Entry],
        answers: dict[str, Any],
        increments: dict[str, int],
        dead: list[DeadLetter] | None = None,
    ) -> None:
        ack = Acknowledgement(entries, answers, increments, self._table_status(), dead or [])
        await self._with_retry(
            lambda: ack_and_answer(self._redis_client, self.keys, ack, self.settings.reply_ttl_ms)
        )
        self._summary.add(increments)  # counted once acked and answered
        if self._metrics is not None:
            now_ms = time.time() * 1000 + self._redis_clock_offset_ms
            arrivals = entry_arrivals_ms(entry.entry_id for entry in entries)
            self._metrics.acknowledged(increments, arrivals, now_ms)

    async def _compact(self, target_rows: int) -> None:
        """Compact towards ``target_rows``, then again while another tier is full (appends
        made during one compaction may fill one)."""
        assert self._sink is not None
        try:
            target: int | None = target_rows
            while target is not None and not self._replaced and not self._stop_event.is_set():
                rows = await self._sink.compact(target, self.settings.keep_versions)
                if rows is None:
                    return  # nothing merged: the next append looks again
                target = compaction_target(rows, self.settings.max_batch, self._compaction.fanout)
        except WriterReplaced:
            self._replaced = True
            self.request_stop()
        except Exception:  # compaction is housekeeping: never stops the writer
            logger.exception("compaction of %r failed; will try again later", self.keys.table)

    async def _call_on_flushed(self, entries: list[Entry]) -> None:
        if self._on_flushed is None:
            return
        records = [entry.record for entry in entries if entry.record is not None]
        try:
            outcome = self._on_flushed(records)
            if inspect.isawaitable(outcome):
                await outcome
        except Exception:  # the hook never breaks the write path
            logger.exception("on_flushed hook raised; ignored")

    # -- redis bookkeeping -------------------------------------------------------------------

    @property
    def _seen_sequences(self) -> SeenSequences:
        assert self._seen is not None
        return self._seen

    @property
    def _stream_group(self) -> StreamGroup:
        assert self._group is not None
        return self._group

    @property
    def _redis_client(self) -> AsyncRedis:
        assert self._redis is not None
        return self._redis

    async def _redis_now_ms(self) -> int:
        """Redis server time, the clock record deadlines are measured against."""
        assert self._batch_context_reader is not None
        now_ms = (await self._batch_context_reader.read()).now_ms
        self._redis_clock_offset_ms = now_ms - time.time() * 1000
        return now_ms

    def _waited_s(self, entry_id: bytes) -> float:
        """How long the entry has been in the stream, by its id's time (Redis time, estimated
        from this host's clock and their offset at the last flush)."""
        now_ms = time.time() * 1000 + self._redis_clock_offset_ms
        return max(0.0, (now_ms - int(entry_id.split(b"-", 1)[0])) / 1000)

    def _table_status(self) -> dict[str, int | str]:
        """The table's row count and version, recorded in the status hash after each flush."""
        assert self._sink is not None
        return {"table_rows": self._sink.rows, "table_version": self._sink.version}

    async def _with_retry(self, operation: Callable[[], Awaitable[Any]]) -> Any:
        """Run a Redis operation until it succeeds. Unreachable Redis is waited out; other
        Redis errors (out of memory, a read-only replica) are logged and retried too, since
        giving up here would leave committed records unanswered."""
        backoff = Backoff()
        while True:
            try:
                return await operation()
            except (AuthenticationError, NoPermissionError) as exc:
                raise ConfigError(f"redis refused the writer: {exc} (check its ACL user)") from exc
            except REDIS_FAILURES as exc:
                if self._stop_event.is_set():
                    # Stopping: what is unacked stays pending, and the next writer settles it
                    # (from the watermark if it was committed).
                    raise _RedisGaveUp(f"redis: {type(exc).__name__}: {exc}") from exc
                delay = backoff.next_delay()
                logger.warning("redis: %s: %s; retrying in %.2fs", type(exc).__name__, exc, delay)
                await asyncio.sleep(delay)

    async def _renew(self, lease: Lease, stop: asyncio.Event) -> None:
        while True:
            try:
                await asyncio.wait_for(stop.wait(), lease.renew_interval_s)
                return
            except asyncio.TimeoutError:
                pass
            try:
                state = await lease.renew()
            except REDIS_FAILURES as exc:
                logger.warning("lease renewal failed: %s: %s", type(exc).__name__, exc)
                continue
            if state is Renewal.RETAKEN:
                logger.warning("table %r's lease had vanished; retaken", self.settings.table)
            elif state is Renewal.LOST:
                logger.error(
                    "writer %s now holds table %r (this writer stalled past its lease); "
                    "stopping without flushing",
                    await lease.holder(),
                    self.settings.table,
                )
                self._replaced = True
                self.request_stop()
                return

    async def _retire(self, lease: Lease) -> None:
        assert self._group is not None
        try:
            await self._group.retire()
            await lease.release()
        except REDIS_FAILURES as exc:
            logger.warning("could not record the stop in redis: %s", exc)


@dataclass
class _Flushed:
    """A batch whose append returned: what to answer, and whether to compact after it."""

    entries: list[Entry]
    settlement: Settlement
    compact_to_rows: int | None


class _RedisGaveUp(Exception):
    """A Redis call kept failing after a stop was requested."""


def _entry_bytes(entry: RawEntry) -> int:
    fields = entry[1] or {}
    return sum(len(value) for value in fields.values())


def _increments(settlement: Settlement) -> dict[str, int]:
    return {
        "batches": settlement.commits,
        "append_ms": round(settlement.append_s * 1000),
        "rows": len(settlement.landed),
        "rejected": settlement.rejected,
        "failed": settlement.failed,
        "expired": settlement.expired,
        "duplicates": settlement.duplicates,
    }


def _resolve_hook(hook: str | Callable[..., Any] | None) -> Callable[..., Any] | None:
    if hook is None or callable(hook):
        return hook
    loaded = load_object(hook, "--on-flushed")
    if not callable(loaded):
        raise ConfigError(f"--on-flushed {hook!r} is not callable")
    return loaded  # type: ignore[no-any-return]
