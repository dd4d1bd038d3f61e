"""What became of a batch: the answers it settled, the data files written for it, and the
batch as the flush pipeline carries it from one stage to the next (``flush.py`` settles it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from lancequeue.common.replies import error_payload
from lancequeue.writer.entries import Entry
from lancequeue.writer.keyed import KeyedOps
from lancequeue.writer.watermark import SKIPPED_SILENTLY, Outcome, Watermark


@dataclass
class Settlement:
    """What became of a batch's entries."""

    answers: dict[str, Outcome] = field(default_factory=dict)
    """Record id → its answer (None: in the table). Records not here are acked unanswered."""
    silent: set[str] = field(default_factory=set)
    """Entries acked without an answer: no usable reply key, or a sequence number refused."""
    landed: list[Entry] = field(default_factory=list)
    recovered: int = 0
    """Records found in the table already (an earlier writer committed them): answered, not
    written again."""
    failed: int = 0
    rejected: int = 0
    expired: int = 0
    duplicates: int = 0
    ignored: int = 0
    deleted: int = 0
    """Rows its deletes removed from the table."""
    commits: int = 0
    version: int | None = None
    """The table version its last commit made (None: it committed nothing)."""
    append_s: float = 0.0
    """Time spent writing data files and committing (not waiting for the batch before)."""

    def fail(self, entries: list[Entry], exc: BaseException) -> None:
        """Answer ``WriteFailed`` (saying ``exc``) each of ``entries`` with no answer yet."""
        for entry in entries:
            if entry.record_id not in self.answers:
                self.answers[entry.record_id] = error_payload(
                    "WriteFailed", str(exc), type(exc).__name__
                )
                self.failed += 1


@dataclass
class Written:
    """Data files written for a batch and not yet committed, with the rows they hold."""

    rows: list[Entry] = field(default_factory=list)
    fragments: list[Any] = field(default_factory=list)
    count: int = 0

    def add(self, rows: list[Entry], fragments: list[Any], count: int) -> None:
        self.rows.extend(rows)
        self.fragments.extend(fragments)
        self.count += count


@dataclass
class PreparedBatch:
    """A batch ready to append: its entries in stream order, the answers settled without
    writing, and the Arrow table of the rows to write (None if there are none)."""

    entries: list[Entry]
    epoch: str
    result: Settlement
    number: int
    """Its place among the batches this settler prepared (``answered`` names it by this)."""
    rows: list[Entry] = field(default_factory=list)
    table: pa.Table | None = None
    written: Written = field(default_factory=Written)
    """The data files written for it (``BatchSettler.write``), to commit."""
    keyed: KeyedOps | None = None
    """Its operations by key, on a table with key columns (``keyed.py``); an upsert table's
    rows are there, not in ``table``."""


def batch_watermark(
    epoch: str, entries: list[Entry], unanswered: list[dict[str, Outcome]]
) -> Watermark:
    """The watermark of a commit that settles the batch ``entries`` (in stream order): each
    entry up to its last is in this or an earlier commit, or listed with the answer it got
    instead, in ``unanswered`` (this batch's, and those of the batches before it not answered
    yet)."""
    skipped: dict[str, Outcome] = {}
    for batch in unanswered:
        skipped.update(batch)
    return Watermark(epoch, entries[-1].entry_id.decode(), skipped)


def skipped_answers(result: Settlement) -> dict[str, Outcome]:
    """The batch's records not in the table, with the answers they got (so far)."""
    skipped: dict[str, Outcome] = dict.fromkeys(result.silent, SKIPPED_SILENTLY)
    skipped.update((record, answer) for record, answer in result.answers.items() if answer)
    return skipped


DUPLICATE = error_payload(
    "WriteFailed",
    "a record with this producer id and sequence number was settled before (a copy sent again "
    "after a lost connection, or another client's under this producer's id): this one was not "
    "written",
    "Duplicate",
)


def rejection_answer(reason: str) -> Outcome:
    return error_payload("RecordRejected", reason, "RecordRejected")
