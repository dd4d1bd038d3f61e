"""One flush: settle a batch of stream entries and say how to answer each.

Settling a batch means: drop duplicates and answer what cannot be written (undecodable,
expired, over the limits, not fitting the schema), append the rest in one commit carrying the
batch's watermark, and, if that append fails, retry it (transient failures) or bisect it (a
record the checks missed that the table refuses), so that only the records at fault are
rejected and the others land.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import pyarrow as pa

from lancequeue.common.errors import WriterReplaced
from lancequeue.common.protocol import error_payload
from lancequeue.writer.dedupe import SeenSequences
from lancequeue.writer.entries import Entry
from lancequeue.writer.sink import TableSink
from lancequeue.writer.watermark import SKIPPED_SILENTLY, Outcome, Watermark, parse_id

logger = logging.getLogger(__name__)

_DATA_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, ValueError, TypeError)
"""Append failures caused by the data itself: bisected, not retried."""


@dataclass
class Settlement:
    """What became of a batch's entries."""

    answers: dict[bytes, Outcome] = field(default_factory=dict)
    """Entry id → its answer (None: in the table). Entries not here are acked unanswered."""
    silent: set[bytes] = field(default_factory=set)
    """Entries acked without an answer: duplicates, and entries naming no usable reply key."""
    landed: list[Entry] = field(default_factory=list)
    failed: int = 0
    rejected: int = 0
    expired: int = 0
    duplicates: int = 0
    commits: int = 0


@dataclass(frozen=True)
class RetryPolicy:
    retries: int
    backoff_ms: int


class BatchSettler:
    """Settles batches for one writer."""

    def __init__(self, sink: TableSink, seen: SeenSequences, retry: RetryPolicy) -> None:
        self._sink = sink
        self._seen = seen
        self._retry = retry

    async def settle(self, entries: list[Entry], now_ms: int, epoch: str) -> Settlement:
        """Write and answer ``entries`` (in stream order). Raises ``WriterReplaced`` if a newer
        writer fenced the table: nothing of the batch is answered then."""
        result = Settlement()
        await self._seen.load({e.producer_id for e in entries if e.producer_id is not None})
        in_batch: set[tuple[str, int]] = set()
        writable: list[Entry] = []
        for entry in entries:
            producer = entry.producer_id
            if producer is None:
                result.silent.add(entry.entry_id)  # no usable reply key: never written
                continue
            if self._seen.settled(producer, entry.seq) or (producer, entry.seq) in in_batch:
                result.silent.add(entry.entry_id)  # a re-send; the first copy gets the answer
                result.duplicates += 1
                continue
            in_batch.add((producer, entry.seq))
            if entry.record is None:
                result.answers[entry.entry_id] = _rejected(entry.rejection or "rejected")
            elif entry.deadline_ms is not None and entry.deadline_ms < now_ms:
                result.answers[entry.entry_id] = error_payload(
                    "WriteTimeout",
                    f"deadline passed {now_ms - entry.deadline_ms} ms before the record's batch "
                    "was built: not written",
                    "expired",
                )
                result.expired += 1
            else:
                writable.append(entry)
        if writable:
            await self._write(writable, entries, result, epoch)
        result.rejected = sum(
            1
            for answer in result.answers.values()
            if answer is not None and answer["error"] == "RecordRejected"
        )
        for entry in entries:
            if entry.producer_id is not None:
                self._seen.advance(entry.producer_id, entry.seq)
        return result

    async def _write(
        self, writable: list[Entry], entries: list[Entry], result: Settlement, epoch: str
    ) -> None:
        records = [entry.record for entry in writable if entry.record is not None]
        try:
            batch, rejected = await self._sink.prepare(records)
        except WriterReplaced:
            raise
        except Exception as exc:  # creating the table failed: answer, keep serving
            self._fail(writable, result, exc)
            return
        for index, reason in rejected.items():
            result.answers[writable[index].entry_id] = _rejected(reason)
        if batch is None:
            return
        rows = [entry for index, entry in enumerate(writable) if index not in rejected]
        last_id = entries[-1].entry_id.decode()
        await self._land(rows, batch, result, epoch, entries, last_id)

    async def _land(
        self,
        rows: list[Entry],
        batch: pa.Table,
        result: Settlement,
        epoch: str,
        entries: list[Entry],
        last_id: str,
    ) -> bool:
        """Append ``rows`` (``batch``) in one commit, or bisect it. Returns False once a
        transient failure outlasted the retries: everything not landed then is answered
        ``WriteFailed`` and nothing more is attempted."""
        watermark = _watermark(epoch, last_id, entries, result)
        error = await self._append_with_retries(batch, watermark)
        if error is None:
            result.landed.extend(rows)
            result.commits += 1
            for entry in rows:
                result.answers[entry.entry_id] = None
            return True
        if not isinstance(error, _DATA_ERRORS):
            self._fail(rows, result, error)
            return False
        if len(rows) == 1:
            result.answers[rows[0].entry_id] = _rejected(
                f"the table refused it: {type(error).__name__}: {error}"
            )
            return True
        half = len(rows) // 2
        left_last = rows[half - 1].entry_id.decode()
        left = batch.slice(0, half)
        if not await self._land(rows[:half], left, result, epoch, entries, left_last):
            self._fail(rows[half:], result, error)
            return False
        return await self._land(rows[half:], batch.slice(half), result, epoch, entries, last_id)

    async def _append_with_retries(
        self, batch: pa.Table, watermark: Watermark
    ) -> BaseException | None:
        delay_s = self._retry.backoff_ms / 1000
        for attempt in range(self._retry.retries + 1):
            try:
                await self._sink.append(batch, watermark)
                return None
            except WriterReplaced:
                raise
            except _DATA_ERRORS as exc:
                logger.warning("append of %d rows refused: %s", batch.num_rows, exc)
                return exc
            except Exception as exc:  # I/O, object store, conflicts: worth another try
                if attempt == self._retry.retries:
                    logger.error(
                        "append of %d rows failed %d times; answering WriteFailed: %s: %s",
                        batch.num_rows,
                        attempt + 1,
                        type(exc).__name__,
                        exc,
                    )
                    return exc
                logger.warning(
                    "append of %d rows failed (%s: %s); retry %d/%d in %.2fs",
                    batch.num_rows,
                    type(exc).__name__,
                    exc,
                    attempt + 1,
                    self._retry.retries,
                    delay_s,
                )
                await asyncio.sleep(delay_s)
                delay_s *= 2
        raise AssertionError("unreachable")

    @staticmethod
    def _fail(entries: list[Entry], result: Settlement, exc: BaseException) -> None:
        for entry in entries:
            if entry.entry_id not in result.answers:
                result.answers[entry.entry_id] = error_payload(
                    "WriteFailed", str(exc), type(exc).__name__
                )
                result.failed += 1


def _watermark(epoch: str, last_id: str, entries: list[Entry], result: Settlement) -> Watermark:
    """The watermark of a commit that settles everything up to ``last_id``: each entry up to
    there is in this or an earlier commit, or listed with the answer it got instead."""
    limit = parse_id(last_id)
    skipped: dict[str, Outcome] = {}
    for entry in entries:
        if parse_id(entry.entry_id) > limit:
            break
        answer = result.answers.get(entry.entry_id)
        if answer is not None:
            skipped[entry.entry_id.decode()] = answer
        elif entry.entry_id in result.silent:
            skipped[entry.entry_id.decode()] = SKIPPED_SILENTLY
    return Watermark(epoch, last_id, skipped)


def _rejected(reason: str) -> Outcome:
    return error_payload("RecordRejected", reason, "RecordRejected")
