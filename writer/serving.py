"""Serving one table, once its writer holds the lease and has fenced the table.

Built only then (``TableServer.open``), so everything it holds is known: the table, the fencing
token, the watermark the writers before left. It replays what they left pending, then runs the
coalesce loop: read entries, flush a batch when its window or size is up, and hand it to the
flush pipeline (claim and build, append, then ack and answer).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from typing import Any

import pyarrow as pa
from redis.exceptions import AuthenticationError, NoPermissionError

from lancequeue.common.entries import arrived_ms, record_count
from lancequeue.common.errors import WriterReplaced
from lancequeue.common.keys import TableKeys
from lancequeue.common.redis_client import REDIS_FAILURES, AsyncRedis
from lancequeue.writer.acknowledger import Acknowledger
from lancequeue.writer.answering import Answerer, OnFlushed, RedisClock, table_status
from lancequeue.writer.claims import BatchClaim, Claimer, Ranges, entry_ranges
from lancequeue.writer.coalesce import Coalescer
from lancequeue.writer.column_kinds import publish_columns
from lancequeue.writer.entries import Entry, read_entries
from lancequeue.writer.flush import BatchSettler
from lancequeue.writer.indexing import check_vector_column
from lancequeue.writer.lease import Lease
from lancequeue.writer.metrics import TableMetrics
from lancequeue.writer.pipeline import FlushPipeline
from lancequeue.writer.refusals import RetryPolicy
from lancequeue.writer.retrying import Outage, until_done
from lancequeue.writer.settings import WriterSettings
from lancequeue.writer.settlement import PreparedBatch
from lancequeue.writer.shutdown import Shutdown
from lancequeue.writer.stream_group import RawEntry, StreamGroup
from lancequeue.writer.summary import Summary
from lancequeue.writer.table import TableSink
from lancequeue.writer.upkeep import Upkeep
from lancequeue.writer.watermark import Watermark

logger = logging.getLogger(__name__)

_CLAIM_EVERY_RENEWALS = 10
"""While idle, look for entries left pending by replaced writers every this many renewals."""
_ISOLATE_AFTER_DELIVERIES = 3
"""An entry read this often without being settled may be what kills the writer: it is written
in a batch of its own, so its batch-mates land before it is tried."""


class TableServer:
    """Serves one table for the writer holding its lease."""

    def __init__(
        self,
        settings: WriterSettings,
        redis: AsyncRedis,
        lease: Lease,
        sink: TableSink,
        group: StreamGroup,
        takeover: Watermark | None,
        shutdown: Shutdown,
        metrics: TableMetrics | None,
        on_flushed: OnFlushed | None,
    ) -> None:
        self.settings = settings
        self.keys = group.keys
        self.sink = sink
        self._group = group
        self._takeover = takeover
        """The newest watermark of the writers before this one, read as this one fenced the
        table: what they committed and did not answer is answered from it."""
        self._shutdown = shutdown
        self._claimer = Claimer(group.calls, group.keys, lease.value, settings.lease_ms)
        self._lease, self._redis = lease, redis
        self._clock = RedisClock()
        self._answers = Answerer(
            Acknowledger(
                group.calls,
                group.keys,
                settings.reply_ttl_ms,
                settings.max_queue_size,
                settings.max_batch,
            ),
            sink,
            self._retrying,
            self._clock,
            metrics,
            on_flushed,
        )
        self._settler = BatchSettler(
            sink, RetryPolicy(settings.flush_retries, settings.retry_backoff_ms)
        )
        self._upkeep = Upkeep(settings, sink, shutdown, self._answers.summary, (redis, group.keys))
        self._columns = False  # whether the table's columns are published
        self._pipeline: FlushPipeline[PreparedBatch, PreparedBatch | None, PreparedBatch] = (
            FlushPipeline(self._write, self._commit, self._answer, self._after_append)
        )

    @classmethod
    async def open(
        cls,
        settings: WriterSettings,
        redis: AsyncRedis,
        lease: Lease,
        schema: pa.Schema | None,
        shutdown: Shutdown,
        metrics: TableMetrics | None = None,
        on_flushed: OnFlushed | None = None,
    ) -> TableServer:
        """Open (or create) and fence the table, make sure the stream and its group exist, and
        publish the writer's settings and status. Raises ``WriterReplaced`` if a newer writer
        fenced the table meanwhile."""
        keys = TableKeys(settings.table)
        sink, takeover = await TableSink.open(
            settings.resolved_db_uri,
            settings.table,
            schema,
            settings.metadata_cache_bytes,
            lease,
            lease.consumer,
            settings.storage_options,
            settings.bad_vectors,
            settings.table_key,
        )
        group = StreamGroup(redis, keys, lease, settings.max_record_bytes, settings.max_batch_bytes)
        what = f"table {settings.table!r}"
        await until_done(group.ensure, shutdown.requested, what)
        status = {**table_status(sink), "db_uri": settings.resolved_db_uri}
        await until_done(
            lambda: group.announce(settings.max_queue_size, settings.max_batch, status),
            shutdown.requested,
            what,
        )
        if settings.vector_index is not None and sink.schema is not None:
            check_vector_column(sink.schema, settings.vector_index, settings.table)
        server = cls(settings, redis, lease, sink, group, takeover, shutdown, metrics, on_flushed)
        server._columns = await publish_columns(redis, keys, lease, sink.schema)
        return server

    # -- the coalesce loop -------------------------------------------------------------------

    async def serve(self) -> None:
        """Replay what earlier writers left pending, then serve until a stop is requested; on
        return every record read was flushed, acked and answered (unless replaced)."""
        try:
            self._upkeep.start()
            await self._coalesce_loop()
            await self._pipeline.drain()
        except BaseException:
            self._shutdown.request()  # so that Redis calls still retrying give up
            await self._pipeline.abandon()
            raise
        finally:
            try:
                await self._group.close()
                await self._group.calls.aclose()
            finally:  # a compaction or index upkeep still running is waited for in any case
                await self._upkeep.stop()

    async def _coalesce_loop(self) -> None:
        group = self._group
        stopping = self._shutdown.requested
        # Entries left pending by earlier writers (crashed, or replaced) come first: those the
        # table already holds are answered from the watermark, the others written.
        await self._retrying(self._redis_now_ms)  # the clock offset batch windows rely on
        claimed = await self._retrying(lambda: group.claim_orphans(0))
        if claimed:
            logger.info("replaying %d entries left pending by an earlier writer", claimed)
        await self._replay_pending()
        coalescer: Coalescer[RawEntry] = Coalescer(
            self.settings.coalesce_ms,
            self.settings.max_batch,
            self.settings.max_block_ms,
            max_bytes=self.settings.max_batch_bytes,
            size=_entry_bytes,
            count=lambda entry: record_count(entry[1]),
        )
        next_claim_at = time.monotonic() + self._claim_interval_s
        outage = Outage(f"table {self.keys.table!r}: reading the stream")
        read_lost = False
        burst = self.settings.burst
        quiet = False  # a burst's last read found nothing
        last_read = "0"  # the last entry read; everything up to it is in hand or settled
        topped_up = False  # the batch due in hand had its read that does not wait
        while not stopping.is_set():
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
                if await self._retrying(lambda: group.claim_orphans(self._orphan_idle_ms)):
                    logger.info("replaying entries left pending by a replaced writer")
                    await self._replay_pending()
                continue
            drained = False
            try:
                if read_lost:
                    # A read whose reply was lost still delivered its entries to this consumer:
                    # they are pending after the last entry in hand. Take them first, so entries
                    # are handled in stream order.
                    entries = await group.read_pending(
                        last_read, coalescer.room, coalescer.room_bytes
                    )
                    read_lost = bool(entries)
                else:
                    # A batch due by its window takes what else is waiting, without waiting;
                    # so does every read of a burst, which ends once one finds nothing.
                    block_ms = None if top_up or burst else coalescer.block_ms()
                    entries = await group.read_new(coalescer.room, block_ms, coalescer.room_bytes)
                    topped_up = top_up
                    drained = burst and not entries
                outage.succeeded()
            except WriterReplaced as exc:
                self._shutdown.replace(exc)
                break
            except (AuthenticationError, NoPermissionError):
                raise  # a configuration error: retrying cannot help
            except REDIS_FAILURES as exc:
                # Unreachable, or refusing (out of memory, loading): the read may have been
                # delivered, so what it took is read again from the pending list.
                read_lost = True
                await asyncio.sleep(outage.failed(exc))
                continue
            if entries:
                last_read = entries[-1][0].decode()
                coalescer.add(entries, self._waited_s(entries[0]))
                quiet = False
            elif drained and len(coalescer):
                await self._flush(coalescer.take())  # nothing more is waiting: no window
                topped_up = False
            elif drained:
                # Twice in a row: a read that recreated a vanished group returns nothing once.
                if quiet:
                    logger.info("burst: the queue of table %r is empty", self.keys.table)
                    break
                quiet = True
        if len(coalescer) and not self._shutdown.replaced:
            logger.info("stopping: flushing %d records in hand", len(coalescer))
        while len(coalescer) and not self._shutdown.replaced:
            await self._flush(coalescer.take())

    async def _replay_pending(self) -> None:
        """Settle this consumer's pending entries (claimed from earlier writers): those the
        watermark of the writers before covers are answered from it, never written again."""
        group = self._group
        watermark = self._takeover
        position = "0"
        while not self._shutdown.replaced:
            raw: list[RawEntry] = await self._retrying(
                functools.partial(group.read_pending, position, self.settings.max_batch)
            )
            if not raw:
                return
            position = raw[-1][0].decode()
            ids = [entry_id for entry_id, _ in raw]
            deliveries = await self._retrying(functools.partial(group.deliveries, ids))
            if watermark is not None:
                covered = [r for r in raw if watermark.covers(group.epoch, r[0])]
                if covered:
                    await self._answers.from_watermark(self._read(covered), watermark)
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
        """Claim and build the batch now (while the one before may still be appending) and hand
        it to the pipeline, which appends it after the one before, then answers it."""
        if self._shutdown.replaced:
            return  # the new writer replays these entries; appending them here would duplicate
        entries = self._read(raw_entries)
        if deliveries > self.settings.max_deliveries:
            await self._pipeline.drain()
            await self._answers.dead_letter(entries, deliveries, self.settings.max_deliveries)
            return
        try:
            claimed = await self._claim(entry_ranges(entries))
            prepared = await self._settler.prepare(entries, self._group.epoch, claimed)
        except WriterReplaced as exc:
            self._shutdown.replace(exc)
            return
        await self._pipeline.submit(prepared)

    async def _claim(self, ranges: Ranges) -> BatchClaim:
        claim: BatchClaim = await self._retrying(lambda: self._claimer.claim(ranges))
        self._clock.learn(claim.now_ms)
        return claim

    async def _write(self, prepared: PreparedBatch) -> PreparedBatch | None:
        """The table lane's first part of a flush: the batch's data files (None if this writer
        was replaced)."""
        if self._shutdown.replaced:
            return None
        try:
            return await self._settler.write(prepared)
        except WriterReplaced as exc:
            self._shutdown.replace(exc)
            return None

    async def _commit(self, written: PreparedBatch | None) -> PreparedBatch | None:
        """The table lane's second part, once the appends before it returned: the commit (None
        if this writer was replaced); a compaction may follow it."""
        if written is None:
            return None
        try:
            settlement = await self._settler.commit(written)
        except WriterReplaced as exc:
            self._shutdown.replace(exc)
            return None
        if settlement.commits:
            appended = None if written.keyed is not None else len(written.written.fragments)
            self._upkeep.committed(len(settlement.landed), appended)
        return written

    async def _answer(self, prepared: PreparedBatch) -> None:
        """The answer lane's part of a flush: the hook, then ack and answer."""
        await self._answers.flushed(prepared.entries, prepared.result)
        self._settler.answered(prepared)

    async def _after_append(self, prepared: PreparedBatch) -> None:
        """Housekeeping after an append: publish the columns of a table it created (for
        ``produce`` to type CSV cells by)."""
        if not self._columns and self.sink.schema is not None:  # the table was just created
            self._columns = await publish_columns(
                self._redis, self.keys, self._lease, self.sink.schema
            )

    @property
    def summary(self) -> Summary:
        """What the writer did, for its periodic log line."""
        return self._answers.summary

    async def retire(self) -> None:
        """Record the stop in the status hash."""
        await self._group.retire()

    # -- redis bookkeeping -------------------------------------------------------------------

    async def _retrying(self, operation: Callable[[], Any]) -> Any:
        return await until_done(operation, self._shutdown.requested, f"table {self.keys.table!r}")

    async def _redis_now_ms(self) -> int:
        """Redis server time, the clock record deadlines are measured against."""
        now_ms = await self._claimer.now_ms()
        self._clock.learn(now_ms)
        return now_ms

    def _waited_s(self, entry: RawEntry) -> float:
        """How long the entry has been queued, by the time of its push (``arrived_ms``: Redis
        time, estimated from this host's clock and their offset at the last claim)."""
        return max(0.0, (self._clock.now_ms() - arrived_ms(*entry)) / 1000)


def _entry_bytes(entry: RawEntry) -> int:
    fields = entry[1] or {}
    return sum(len(value) for value in fields.values())
