"""Screening a claimed batch: which of its records may be written, and the answer of each
of the others (a copy, unreadable, abandoned by its producer, past its deadline) or none (no
usable reply key, a sequence number Redis refused).

A columnar entry's records are screened together when one look settles them all, as it does
for almost every entry of a healthy stream; the others, record by record, by the same rules.
"""

from __future__ import annotations

import operator

from lancequeue.common.replies import error_payload
from lancequeue.writer.claims import BatchClaim
from lancequeue.writer.dedupe import SeenSequences
from lancequeue.writer.entries import Entry
from lancequeue.writer.settlement import DUPLICATE, Settlement, rejection_answer

_REJECTION = operator.attrgetter("rejection")


def screen(
    entries: list[Entry],
    refused: set[bytes],
    claimed: BatchClaim,
    seen: SeenSequences,
    result: Settlement,
    highest: dict[str, int],
) -> list[Entry]:
    """The batch's records that may be written, in stream order; the others answered (or
    left silent) in ``result``. ``highest`` learns each producer's highest sequence number
    here. A columnar entry's records are screened together when one look settles them all
    (none copied, abandoned, past the deadline or unreadable), else one by one."""
    settled: dict[str, int] = {}  # each producer's highest settled seq, read once a batch
    in_batch: dict[str, set[int]] = {}  # each producer's seqs screened in this batch
    writable: list[Entry] = []
    count = len(entries)
    index = 0
    while index < count:
        entry = entries[index]
        producer = entry.producer_id
        block = entry.block
        if block is not None and entry.part == 0 and producer is not None:
            end = index + block.count
            last = entry.seq + block.count - 1
            floor = settled.get(producer)
            if floor is None:
                floor = settled[producer] = seen.highest(producer)
            if (
                end <= count
                and entries[end - 1].block is block
                and entry.entry_id not in refused
                and entry.seq > max(floor, highest.get(producer, -1))
                and not claimed.producers[producer].abandoned
                and (entry.deadline_ms is None or entry.deadline_ms >= claimed.now_ms)
                and not any(map(_REJECTION, entries[index:end]))
            ):
                highest[producer] = last
                in_batch.setdefault(producer, set()).update(range(entry.seq, last + 1))
                writable.extend(entries[index:end])
                index = end
                continue
        if _screen_one(entry, refused, claimed, seen, result, highest, settled, in_batch):
            writable.append(entry)
        index += 1
    return writable


def _screen_one(
    entry: Entry,
    refused: set[bytes],
    claimed: BatchClaim,
    seen: SeenSequences,
    result: Settlement,
    highest: dict[str, int],
    settled: dict[str, int],
    in_batch: dict[str, set[int]],
) -> bool:
    """Screen one record (``screen``): whether it may be written; if not, its answer is in
    ``result`` (or it is left silent)."""
    producer = entry.producer_id
    if producer is None or entry.entry_id in refused:
        result.silent.add(entry.record_id)  # never written, nobody to answer
        result.ignored += 1
        return False
    seq = entry.seq
    floor = settled.get(producer)
    if floor is None:
        floor = settled[producer] = seen.highest(producer)
    if seq > highest.get(producer, -1):
        highest[producer] = seq
    screened = in_batch.setdefault(producer, set())
    if seq <= floor or seq in screened:
        result.answers[entry.record_id] = DUPLICATE
        result.duplicates += 1
        return False
    screened.add(seq)
    if not entry.readable:
        result.answers[entry.record_id] = rejection_answer(entry.rejection or "rejected")
        return False
    if seq in claimed.producers[producer].abandoned:
        result.answers[entry.record_id] = error_payload(
            "WriteTimeout",
            "its producer abandoned it at its deadline, before a writer claimed it: not written",
            "abandoned",
        )
        result.expired += 1
        return False
    if entry.deadline_ms is not None and entry.deadline_ms < claimed.now_ms:
        result.answers[entry.record_id] = error_payload(
            "WriteTimeout",
            f"deadline passed {claimed.now_ms - entry.deadline_ms} ms before the record's "
            "batch was built: not written",
            "expired",
        )
        result.expired += 1
        return False
    return True
