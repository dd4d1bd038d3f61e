"""Committing a batch of a table with key columns (``keyed.py``): its deletes, then its rows,
each change settling the records it stands for.

A record is answered by the change that settles it: a delete, and the operations on its key it
undoes or supersedes, once the deletes are committed; an upsert table's row, and the earlier
operations on its key, once the row is. A transient failure after the deletes were committed
fails only what they did not settle. A change the table refuses (a row or a key the writer's
checks let through) is bisected out like a refused append: its record is rejected, and its key
falls back to the operation before it in the batch (an upsert table: the record sent last that
the table takes wins), committed in a round of its own.

The batch's watermark goes on its last commit, and only while nothing was refused: once a round
must follow, a crash before it would replay the batch from the watermark before, which gives the
same table (deleting again deletes nothing, upserting again writes the same values).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from lancequeue.common.replies import error_payload
from lancequeue.writer.entries import Entry
from lancequeue.writer.keyed import Key, KeyedChanges, KeyedOps, settle
from lancequeue.writer.refusals import RetryPolicy, is_data_error, with_retries
from lancequeue.writer.settlement import Settlement, rejection_answer
from lancequeue.writer.table import TableSink
from lancequeue.writer.watermark import Outcome, Watermark

Item = TypeVar("Item", bound=Hashable)
Mark = Callable[[], Watermark]
"""The batch's watermark, made when a commit is to carry it (it lists the answers so far)."""


@dataclass
class _Bisected(Generic[Item]):
    """What became of the items of one change (rows, or keys to delete) the table was given."""

    done: list[Item] = field(default_factory=list)
    refused: dict[Item, BaseException] = field(default_factory=dict)
    version: int | None = None
    deleted: int = 0
    error: BaseException | None = None
    """A transient failure that outlasted the retries: the items not done are not written."""


@dataclass
class _Batch:
    """One batch's commit, round after round."""

    keyed: KeyedOps
    result: Settlement
    mark: Mark
    refused: bool = False
    """Something was refused in this round: another round follows, so no later commit of this
    one carries the watermark."""
    settled: set[int] = field(default_factory=set)
    landed: list[int] = field(default_factory=list)
    """Operations whose rows are in the table."""
    version: int | None = None
    failed: bool = False
    """A transient failure ended the batch: nothing more is committed."""

    def answer(self, indices: Sequence[int], answer: Outcome = None) -> None:
        for index in indices:
            self.result.answers[self.keyed.entries[index].record_id] = answer
            self.settled.add(index)

    def fail(self, error: BaseException) -> None:
        """Answer ``WriteFailed`` every operation nothing settled."""
        unsettled = [i for i in range(len(self.keyed.ops)) if i not in self.settled]
        self.result.fail([self.keyed.entries[index] for index in unsettled], error)
        self.failed = True


class KeyedCommits:
    """Commits the changes of batches of one table with key columns."""

    def __init__(self, sink: TableSink, retry: RetryPolicy) -> None:
        self._sink = sink
        self._retry = retry

    async def upserts(self, keyed: KeyedOps, result: Settlement, mark: Mark) -> list[Entry]:
        """Commit an upsert table's batch: round after round, its deletes then its rows, until
        every operation is settled; returns the records whose rows are in the table (their
        version in ``result.version``)."""
        batch = _Batch(keyed, result, mark)
        changes = keyed.changes
        while changes.rows or changes.deletes:
            batch.refused = False
            fallback: set[Key] = set()
            if changes.deletes:
                fallback |= await self._deletes(batch, changes, not changes.rows)
            if changes.rows and not batch.failed:
                fallback |= await self._rows(batch, changes)
            if batch.failed:
                break
            changes = settle(
                keyed.key,
                keyed.ops,
                {i for i, op in enumerate(keyed.ops) if op.key not in fallback} | batch.settled,
            )
        result.version = batch.version
        return [keyed.entries[index] for index in sorted(batch.landed)]  # in stream order

    async def deletes(self, keyed: KeyedOps, result: Settlement, mark: Mark | None) -> bool:
        """Commit an append table's deletes (carrying the watermark if ``mark`` is given: no
        rows follow); False if they failed (everything of the batch is then answered, and its
        rows must not be committed: a delete sent again would remove them)."""
        batch = _Batch(keyed, result, mark or _never)
        refused_keys = await self._deletes(batch, keyed.changes, mark is not None)
        result.version = batch.version
        if batch.failed:
            return False
        for index in keyed.changes.with_deletes:
            if index not in batch.settled and keyed.ops[index].key in refused_keys:
                batch.answer(  # an append a refused delete after it would have removed
                    [index],
                    error_payload(
                        "WriteFailed",
                        "not written: the table refused the delete of its key sent after it "
                        "in the same batch; send both again",
                        "WriteFailed",
                    ),
                )
                result.failed += 1
        return True

    async def _deletes(self, batch: _Batch, changes: KeyedChanges, last: bool) -> set[Key]:
        """Delete the keys of ``changes``, answering what that settles; returns the keys the
        table refused (their deletes are rejected)."""
        done = await self._bisect(
            batch,
            changes.deletes,
            lambda keys, watermark: self._sink.merge(None, list(keys), watermark),
            last,
            ("delete", "keys"),
        )
        batch.result.deleted += done.deleted
        batch.version = done.version if done.version is not None else batch.version
        gone = set(done.done)
        ops = batch.keyed.ops
        batch.answer([i for i in changes.with_deletes if ops[i].key in gone])
        last_row: dict[Key, int] = {}  # an upsert table's: the deletes before it give way to it
        for index in changes.with_deletes if batch.keyed.key.upsert else []:
            op_key = ops[index].key
            if op_key is not None and not ops[index].delete:
                last_row[op_key] = index
        for index in changes.with_deletes:
            op_key = ops[index].key
            why = done.refused.get(op_key) if ops[index].delete and op_key is not None else None
            if why is not None and index > last_row.get(op_key or (), -1):
                batch.answer([index], _refusal("the table refused the delete", why))
        if done.error is not None:
            batch.fail(done.error)
        return set(done.refused)

    async def _rows(self, batch: _Batch, changes: KeyedChanges) -> set[Key]:
        """Upsert the rows of ``changes``, answering what that settles; returns the keys of the
        rows the table refused (each rejected)."""
        keyed = batch.keyed
        done = await self._bisect(
            batch,
            changes.rows,
            lambda indices, watermark: self._sink.merge(keyed.table(indices), [], watermark),
            True,
            ("merge", "rows"),
        )
        for index in done.done:
            batch.answer([index, *changes.superseded.get(index, [])])
            batch.landed.append(index)
        for index, why in done.refused.items():
            batch.answer([index], _refusal("the table refused it", why))
        batch.version = done.version if done.version is not None else batch.version
        if done.error is not None:
            batch.fail(done.error)
        return {op_key for index in done.refused if (op_key := keyed.ops[index].key) is not None}

    async def _bisect(
        self,
        batch: _Batch,
        items: Sequence[Item],
        call: Callable[[Sequence[Item], Watermark | None], Awaitable[tuple[int, dict[str, int]]]],
        last: bool,
        naming: tuple[str, str],
    ) -> _Bisected[Item]:
        """Give the table ``items`` in one commit (carrying the watermark if ``last`` and
        nothing was refused); while it refuses them, in halves, each a commit of its own, so
        that only the items at fault are left out."""
        watermark = batch.mark() if last and not batch.refused else None
        what, unit = naming  # as logged: "merge of 128 rows"
        outcome = await with_retries(
            self._retry, lambda: call(items, watermark), f"{what} of {len(items)} {unit}"
        )
        if not isinstance(outcome, BaseException):
            version, stats = outcome
            return _Bisected(list(items), {}, version, int(stats.get("num_deleted_rows", 0)))
        if not is_data_error(outcome):
            return _Bisected(error=outcome)
        if len(items) == 1:
            batch.refused = True
            return _Bisected(refused={items[0]: outcome})
        half = len(items) // 2
        first = await self._bisect(batch, items[:half], call, False, naming)
        if first.error is not None:
            return first
        second = await self._bisect(batch, items[half:], call, last, naming)
        return _Bisected(
            first.done + second.done,
            {**first.refused, **second.refused},
            second.version if second.version is not None else first.version,
            first.deleted + second.deleted,
            second.error,
        )


def _refusal(what: str, why: BaseException) -> Outcome:
    return rejection_answer(f"{what}: {type(why).__name__}: {why}")


def _never() -> Watermark:
    raise AssertionError("this commit carries no watermark")
