"""One flush: settle a batch of stream entries and say how to answer each.

Settling a batch means, once its records are claimed in Redis (``claims.py``): answer what
cannot or must not be written (copies, undecodable records, records over the limits or not
fitting the schema, records their producer abandoned or whose deadline passed), append the rest
in one commit carrying the batch's watermark, and, if that append fails, retry it (transient
failures) or bisect it (a record the checks missed that the table refuses), so that only the
records at fault are rejected and the others land.
"""

from __future__ import annotations

import logging
import time

import pyarrow as pa

from lancequeue.common.errors import WriterReplaced
from lancequeue.writer.claims import BatchClaim, refused_entries
from lancequeue.writer.dedupe import SeenSequences
from lancequeue.writer.entries import Entry
from lancequeue.writer.keyed import KeyedOps, Op, settle
from lancequeue.writer.keyed_commits import KeyedCommits
from lancequeue.writer.refusals import RetryPolicy, is_data_error, with_retries
from lancequeue.writer.screening import screen
from lancequeue.writer.settlement import (
    PreparedBatch,
    Settlement,
    Written,
    batch_watermark,
    rejection_answer,
    skipped_answers,
)
from lancequeue.writer.table import TableSink
from lancequeue.writer.watermark import SKIPPED_SILENTLY, Outcome, Watermark

logger = logging.getLogger(__name__)


class BatchSettler:
    """Settles batches for one writer."""

    def __init__(self, sink: TableSink, retry: RetryPolicy) -> None:
        self._sink = sink
        self._seen = SeenSequences()
        self._retry = retry
        self._keyed = KeyedCommits(sink, retry)
        self._prepared = 0
        self._unanswered: dict[int, dict[str, Outcome]] = {}
        """Batch number → the answers of its records not in the table, for each batch landed
        and not yet answered: the next commits' watermarks list them (they cover its
        entries)."""

    async def prepare(self, entries: list[Entry], epoch: str, claimed: BatchClaim) -> PreparedBatch:
        """Everything before the append, once the batch's records are claimed in Redis
        (``claimed``, for their ``entry_ranges``): answer what cannot or must not be written
        (copies, undecodable or unfitting records, records their producer abandoned, records
        past their deadline at the claim's Redis time), and build the Arrow table of the rest.

        Batches are prepared in stream order, each after the one before it; the next batch may
        be prepared while this one is appended."""
        result = Settlement()
        refused = refused_entries(entries, claimed)
        for producer_id, producer_claim in claimed.producers.items():
            self._seen.learn(producer_id, producer_claim.seen)
        highest: dict[str, int] = {}  # each producer's highest seq in the batch, not refused
        writable = screen(entries, refused, claimed, self._seen, result, highest)
        # Whatever becomes of this batch, each of its sequence numbers gets its answer from it:
        # a copy in a later batch is answered as one.
        for producer, seq in highest.items():
            self._seen.advance(producer, seq)
        self._prepared += 1
        prepared = PreparedBatch(entries, epoch, result, self._prepared)
        if not writable:
            return prepared
        try:
            if not self._sink.ready:  # the first batch defines the table
                records = [entry.materialized() or {} for entry in writable if not entry.delete]
                earlier = await self._sink.ensure_table(records)
                if earlier is not None:
                    writable = self._recover(writable, earlier, epoch, result)
            deletes = [entry for entry in writable if entry.delete]
            if deletes and not self._sink.ready and self._sink.key is not None:
                # no table yet: no row has the key (a writer without key columns refuses them)
                for entry in deletes:
                    why = self._sink.key.unfit(entry.record or {})
                    answer = None if why is None else rejection_answer(f"delete: {why}")
                    result.answers[entry.record_id] = answer
                writable = [entry for entry in writable if not entry.delete]
                deletes = []
            if not writable:
                return prepared
            puts = [entry for entry in writable if not entry.delete] if deletes else writable
            batch, rejected = await self._sink.build(puts) if puts else (None, {})
        except WriterReplaced:
            raise
        except Exception as exc:  # creating the table or an embedding function failed
            logger.error(
                "batch of %d records not built: %s: %s; answering WriteFailed",
                len(writable),
                type(exc).__name__,
                exc,
            )
            result.fail(writable, exc)
            return prepared
        for index, reason in rejected.items():
            result.answers[puts[index].record_id] = rejection_answer(reason)
        prepared.rows = [entry for index, entry in enumerate(puts) if index not in rejected]
        prepared.table = batch
        if deletes or self._sink.key is not None:
            self._by_key(prepared, writable, deletes)
        return prepared

    def _by_key(self, prepared: PreparedBatch, writable: list[Entry], deletes: list[Entry]) -> None:
        """Settle a batch's records and deletes to one change per key (``keyed.py``)."""
        result = prepared.result
        keys, refused = self._sink.build_keys([entry.record or {} for entry in deletes])
        for index, reason in refused.items():
            result.answers[deletes[index].record_id] = rejection_answer(reason)
        key = self._sink.key
        if key is None:
            return
        deleted = iter(key.keys(keys) if keys is not None else [])
        table = prepared.table
        row_keys = iter(key.keys(table) if table is not None else [])
        keyless = key.null_rows(table) if table is not None and key.upsert else {}
        kept = iter(range(len(prepared.rows)))
        puts = {id(entry) for entry in prepared.rows}
        refused_deletes = {id(deletes[index]) for index in refused}
        entries: list[Entry] = []
        ops: list[Op] = []
        row_of: dict[int, int] = {}
        for entry in writable:  # stream order
            if id(entry) in puts:
                row, row_key = next(kept), next(row_keys)
                if row in keyless:
                    result.answers[entry.record_id] = rejection_answer(keyless[row])
                    continue
                row_of[len(ops)] = row
                ops.append(Op(None if row_key.count(None) else row_key))
            elif entry.delete and id(entry) not in refused_deletes:
                ops.append(Op(next(deleted), delete=True))
            else:
                continue
            entries.append(entry)
        changes = settle(key, ops)
        prepared.keyed = KeyedOps(key, entries, ops, table, row_of, changes)
        if key.upsert:  # merged at the commit
            prepared.rows, prepared.table = [], None
        else:  # appended as any batch: only the rows the deletes leave
            prepared.rows = [entries[index] for index in changes.rows]
            prepared.table = prepared.keyed.table(changes.rows) if changes.rows else None
            prepared.keyed.rows = None  # written from prepared.table

    @staticmethod
    def _recover(
        writable: list[Entry], earlier: Watermark, epoch: str, result: Settlement
    ) -> list[Entry]:
        """Answer the records an earlier writer committed (the table it created meanwhile
        holds them, by its watermark) without writing them again; return the others."""
        rest = []
        for entry in writable:
            if not earlier.covers(epoch, entry.entry_id):
                rest.append(entry)
                continue
            answer = earlier.outcome(entry.record_id)
            if answer == SKIPPED_SILENTLY:
                result.silent.add(entry.record_id)
                continue
            result.answers[entry.record_id] = answer
            if answer is None:
                result.recovered += 1
        return rest

    async def write(self, prepared: PreparedBatch) -> PreparedBatch:
        """Write the data files of a prepared batch, not yet part of the table. If the table
        refuses them, the batch is bisected so that only the records it refuses are rejected;
        transient failures are retried. Raises ``WriterReplaced`` if a newer writer fenced the
        table."""
        if self._upserts:
            return prepared  # merged at its commit, on the table the batches before it left
        if prepared.table is not None:
            started = time.monotonic()
            await self._write(prepared.rows, prepared.table, prepared.result, prepared.written)
            prepared.result.append_s += time.monotonic() - started
        prepared.table = None  # written: the rows need not be held until the batch is answered
        return prepared

    @property
    def _upserts(self) -> bool:
        return self._sink.key is not None and self._sink.key.upsert

    async def commit(self, prepared: PreparedBatch) -> Settlement:
        """Commit what ``write`` wrote in one commit carrying the batch's watermark. Batches are
        committed in the order they were prepared, each once the batches before it are
        committed (the flush pipeline sees to it). Its watermark covers them, so it also lists
        the answers of those not answered yet (``answered``): a crash before they are answered
        loses none of them. Raises ``WriterReplaced`` if a newer writer fenced the table."""
        result = prepared.result
        keyed = prepared.keyed
        merges = keyed is not None and (
            bool(keyed.changes.deletes) or (self._upserts and bool(keyed.changes.rows))
        )
        if prepared.written.fragments or merges:
            started = time.monotonic()
            await self._commit(prepared, prepared.written, result)
            result.append_s += time.monotonic() - started
        result.rejected = sum(
            1
            for answer in result.answers.values()
            if answer is not None and answer["error"] == "RecordRejected"
        )
        if prepared.number not in self._unanswered:  # no commit, or a failed one
            self._unanswered[prepared.number] = skipped_answers(result)
        return result

    def answered(self, prepared: PreparedBatch) -> None:
        """The batch's records are acked and answered: later watermarks need not list them."""
        self._unanswered.pop(prepared.number, None)

    async def _write(
        self, rows: list[Entry], batch: pa.Table, result: Settlement, written: Written
    ) -> bool:
        """Write the data files of ``rows`` (``batch``), bisecting it while the table refuses
        it. Returns False once a transient failure outlasted the retries: the rows not written
        then are answered ``WriteFailed`` and nothing more is attempted."""
        outcome = await with_retries(
            self._retry, lambda: self._sink.write(batch), f"append of {batch.num_rows} rows"
        )
        if not isinstance(outcome, BaseException):
            written.add(rows, outcome, batch.num_rows)
            return True
        if not is_data_error(outcome):
            result.fail(rows, outcome)
            return False
        if len(rows) == 1:
            result.answers[rows[0].record_id] = rejection_answer(
                f"the table refused it: {type(outcome).__name__}: {outcome}"
            )
            return True
        half = len(rows) // 2
        if not await self._write(rows[:half], batch.slice(0, half), result, written):
            result.fail(rows[half:], outcome)
            return False
        return await self._write(rows[half:], batch.slice(half), result, written)

    async def _commit(self, prepared: PreparedBatch, written: Written, result: Settlement) -> None:
        """Commit the batch: its deletes (``keyed_commits.py``), then its rows (an upsert
        table's merge, else the data files written), the last commit carrying the batch's
        watermark. By then every record of the batch is written or has its answer."""
        keyed = prepared.keyed
        if keyed is not None and self._upserts:
            landed = await self._keyed.upserts(keyed, result, lambda: self._mark(prepared))
            keyed.rows = None  # merged: not held until the batch is answered
            if result.version is not None:
                self._landed(prepared, landed, skipped_answers(result), result.version)
            return
        if keyed is not None and keyed.changes.deletes:  # the keys it deletes, then the rows
            last = not written.fragments
            mark = (lambda: self._mark(prepared)) if last else None
            if not await self._keyed.deletes(keyed, result, mark) or last:
                if result.version is not None:
                    self._landed(prepared, [], skipped_answers(result), result.version)
                return
        watermark = self._mark(prepared)
        outcome = await with_retries(
            self._retry,
            lambda: self._sink.commit(written.fragments, written.count, watermark),
            f"append of {written.count} rows",
        )
        if isinstance(outcome, BaseException):
            result.fail(written.rows, outcome)  # what the deletes settled keeps its answer
            if result.version is not None:  # the deletes' commit
                self._landed(prepared, [], skipped_answers(result), result.version)
            return
        self._landed(prepared, written.rows, skipped_answers(result), outcome)

    def _mark(self, prepared: PreparedBatch) -> Watermark:
        """The batch's watermark, listing the answers of its records so far."""
        return self._watermark(prepared, skipped_answers(prepared.result))

    def _watermark(self, prepared: PreparedBatch, skipped: dict[str, Outcome]) -> Watermark:
        """The batch's watermark: what it (``skipped``) and earlier unanswered ones skipped."""
        earlier = list(self._unanswered.values())  # landed before this one, not answered
        return batch_watermark(prepared.epoch, prepared.entries, [*earlier, skipped])

    def _landed(
        self, prepared: PreparedBatch, rows: list[Entry], skipped: dict[str, Outcome], version: int
    ) -> None:
        """The batch's commit (its last) returned ``version``: its ``rows`` are in the table."""
        result = prepared.result
        result.version = version
        self._unanswered[prepared.number] = skipped
        result.landed.extend(rows)
        result.commits += 1
        for entry in rows:
            result.answers[entry.record_id] = None
