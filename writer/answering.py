"""Answering what a flush settled: the ``on_flushed`` hook, then one script that acks and
answers (``acknowledger.py``), then the counts (status hash, log summary, metrics).

Also answers without writing: entries an earlier writer committed (from its watermark) and
entries moved to the dead letters.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from lancequeue.common.entries import arrived_ms
from lancequeue.common.replies import error_payload
from lancequeue.writer.acknowledger import Acknowledgement, Acknowledger, DeadLetter
from lancequeue.writer.entries import Entry
from lancequeue.writer.metrics import TableMetrics
from lancequeue.writer.settlement import Settlement
from lancequeue.writer.summary import Summary
from lancequeue.writer.table import TableSink
from lancequeue.writer.watermark import Watermark

logger = logging.getLogger(__name__)

OnFlushed = Callable[[list[dict[str, Any]]], Any]
Retrying = Callable[[Callable[[], Awaitable[Any]]], Awaitable[Any]]
"""Runs a Redis call until it succeeds (``retrying.until_done`` with the writer's stop)."""


class RedisClock:
    """Redis server time as this host estimates it between two readings (deadlines and entry
    ids are in Redis time)."""

    def __init__(self) -> None:
        self._offset_ms = 0.0

    def learn(self, redis_now_ms: int) -> None:
        self._offset_ms = redis_now_ms - time.time() * 1000

    def now_ms(self) -> float:
        return time.time() * 1000 + self._offset_ms


class Answerer:
    """Answers a table's flushes, in the order it is given them."""

    def __init__(
        self,
        acks: Acknowledger,
        sink: TableSink,
        retrying: Retrying,
        clock: RedisClock,
        metrics: TableMetrics | None = None,
        on_flushed: OnFlushed | None = None,
    ) -> None:
        self._acks = acks
        self._sink = sink
        self._retrying = retrying
        self._clock = clock
        self._metrics = metrics
        self._on_flushed = on_flushed
        self.summary = Summary()

    async def flushed(self, entries: list[Entry], settlement: Settlement) -> None:
        """A batch's append returned: the hook (with what landed), then ack and answer."""
        if settlement.landed:
            await self._call_on_flushed(settlement.landed)
        version = settlement.version if settlement.version is not None else self._sink.version
        await self._acknowledge(entries, settlement.answers, _increments(settlement), [], version)

    async def from_watermark(self, entries: list[Entry], watermark: Watermark) -> None:
        """Ack and answer entries an earlier writer committed but did not ack: never again
        written. The watermark says which of them were written and what the others got."""
        answers = {entry.record_id: watermark.outcome(entry.record_id) for entry in entries}
        written = [entry for entry in entries if answers[entry.record_id] is None]
        logger.info(
            "%d pending entries are in the table already (watermark %s): answering, not writing",
            len(written),
            watermark.last_id,
        )
        if written:
            await self._call_on_flushed(written)
        await self._acknowledge(
            entries, answers, {"recovered": len(written)}, [], self._sink.version
        )

    async def dead_letter(self, entries: list[Entry], deliveries: int, max_deliveries: int) -> None:
        """Move entries that keep killing the writer to the dead letters, answering
        ``WriteFailed``."""
        reason = (
            f"read {deliveries} times without being settled (max_deliveries is "
            f"{max_deliveries}): the writer died each time it held it"
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
        version: int | None = None,
    ) -> None:
        ack = Acknowledgement(
            entries, answers, increments, table_status(self._sink), dead or [], version
        )
        await self._retrying(lambda: self._acks.send(ack))
        self.summary.add(increments)  # counted once acked and answered
        if self._metrics is not None:
            arrivals = [arrived_ms(entry.entry_id, entry.fields) for entry in entries]
            self._metrics.acknowledged(increments, arrivals, self._clock.now_ms())

    async def _call_on_flushed(self, entries: list[Entry]) -> None:
        if self._on_flushed is None:
            return
        records = [record for entry in entries if (record := entry.materialized()) is not None]
        try:
            outcome = self._on_flushed(records)
            if inspect.isawaitable(outcome):
                await outcome
        except Exception:  # the hook never breaks the write path
            logger.exception("on_flushed hook raised; ignored")


def table_status(sink: TableSink) -> dict[str, int | str]:
    """The table's row count and version, recorded in the status hash after each flush."""
    return {"table_rows": sink.rows, "table_version": sink.version}


def _increments(settlement: Settlement) -> dict[str, int]:
    return {
        "batches": settlement.commits,
        "append_ms": round(settlement.append_s * 1000),
        "rows": len(settlement.landed),
        "rejected": settlement.rejected,
        "failed": settlement.failed,
        "expired": settlement.expired,
        "duplicates": settlement.duplicates,
        "recovered": settlement.recovered,
        "ignored": settlement.ignored,
        "deleted": settlement.deleted,
    }
