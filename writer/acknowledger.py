"""After a flush: ack and delete the batch's entries, answer every reply key, publish the flush.

All of it is one Lua script, so a batch is never acked without being answered; the same script
raises each producer's highest settled sequence number (for dedupe), forgets the abandoned
sequence numbers now settled, and moves entries that exhausted their deliveries to the
dead-letter stream. Its first write is the ``XACK``, which Redis allows at ``maxmemory``: the
writes after it may then go over the cap, and the ``XDEL``s free the batch's memory, so a full
Redis never strands answered-but-unacked records (a ``MULTI`` holding an ``RPUSH`` would be
refused whole). Only keys of the table's own namespace are written: reply keys were checked
when the entries were read.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from lancequeue.common.codec import encode_record
from lancequeue.common.keys import GROUP, TableKeys
from lancequeue.common.lua_scripts import lua_script
from lancequeue.common.protocol import (
    FIELD_DEAD_AT_MS,
    FIELD_DELIVERIES,
    FIELD_ORIGINAL_ID,
    FIELD_REASON,
    FIELD_RECORD,
    FIELD_SEQ,
)
from lancequeue.common.replies import Answer, encode_ranges, encode_results
from lancequeue.common.script_calls import ScriptCalls
from lancequeue.writer.entries import Entry
from lancequeue.writer.watermark import SKIPPED_SILENTLY, Outcome

logger = logging.getLogger(__name__)

_ACK_AND_ANSWER = lua_script(__name__, "ack_and_answer.lua")
"""Ack, delete, answer and dead-letter a flushed batch: one script (``lua/ack_and_answer.lua``)."""

DEAD_LETTERS_MAXLEN = 100_000
"""The dead-letter stream keeps about this many entries, oldest dropped first."""


@dataclass
class DeadLetter:
    entry: Entry
    deliveries: int
    reason: str


@dataclass
class Acknowledgement:
    """Everything one flush tells Redis."""

    entries: list[Entry]
    answers: dict[str, Outcome]
    """Record id → answer (None: written). Records not here, or answered ``SKIPPED_SILENTLY``,
    are acked without an answer."""
    increments: dict[str, int] = field(default_factory=dict)
    values: dict[str, int | str] = field(default_factory=dict)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    version: int | None = None
    """The table version in which the records written are visible (answered to producers that
    read answers in ranges)."""


class Acknowledger:
    """Acks and answers the flushes of one table."""

    def __init__(
        self,
        calls: ScriptCalls,
        keys: TableKeys,
        reply_ttl_ms: int,
        max_queue_size: int,
        max_batch: int,
    ) -> None:
        self._keys = keys
        self._reply_ttl_ms = reply_ttl_ms
        self._reopen_at = max_queue_size // 2
        self._max_batch = max_batch
        self._calls = calls
        self._script = calls.register(_ACK_AND_ANSWER)

    async def send(self, ack: Acknowledgement) -> None:
        """Ack and delete the entries, push each reply key its results, record each producer's
        settled sequence number, dead-letter what must be, and update the status hash."""
        keys = self._keys
        answered = ack.answers.get
        per_producer: dict[str, list[Answer]] = {}
        seen: dict[str, int] = {}  # each producer's highest seq answered here
        plain: set[str] = set()  # producers with an entry of version 1 here
        dropped: dict[str, list[int]] = {}  # each producer's abandoned seqs answered here
        records_of: dict[bytes, int] = {}  # stream entry id → its records, in stream order
        entries = ack.entries
        count = len(entries)
        index = 0
        while index < count:  # kept to plain lookups: it runs for every record
            entry = entries[index]
            producer = entry.producer_id
            block = entry.block
            items: Iterable[Answer] | None = None
            if block is not None and entry.part == 0 and producer is not None:
                end = index + block.count
                run = entries[index:end]
                # A columnar entry whose records were all written: one look, not one each.
                if (
                    end <= count
                    and run[-1].block is block
                    and [answered(part.record_id, SKIPPED_SILENTLY) for part in run].count(None)
                    == block.count
                ):
                    index = end
                    records_of[entry.entry_id] = records_of.get(entry.entry_id, 0) + block.count
                    top = entry.seq + block.count - 1
                    digest = entry.digest
                    items = [(seq, None, digest) for seq in range(entry.seq, top + 1)]
            if items is None:
                index += 1
                records_of[entry.entry_id] = records_of.get(entry.entry_id, 0) + 1
                if producer is None:
                    continue
                answer = answered(entry.record_id, SKIPPED_SILENTLY)
                if answer is not None and answer == SKIPPED_SILENTLY:
                    continue  # acked unanswered: nothing settled for this producer either
                top = entry.seq
                if answer is None:
                    items = ((top, None, entry.digest),)
                else:
                    items = ((top, answer, None),)
                    if _abandoned(answer):
                        dropped.setdefault(producer, []).append(top)
            assert producer is not None  # both ways above skip a record without one
            results = per_producer.get(producer)
            if results is None:
                results = per_producer[producer] = []
                seen[producer] = top
            elif top > seen[producer]:
                seen[producer] = top
            if not entry.ranged:
                plain.add(producer)
            results.extend(items)
        script_keys = [
            keys.stream,
            keys.queued,
            keys.writer,
            keys.dead_letters,
            keys.inbox,
            keys.inboxed,
        ]
        args: list[bytes | str | int] = [
            GROUP,
            self._reply_ttl_ms,
            keys.flushed_channel,
            self._reopen_at,
            self._max_batch,
        ]
        args.append(len(records_of))
        for entry_id, records in records_of.items():
            args += [entry_id, records]
        args.append(len(ack.dead_letters))
        for dead in ack.dead_letters:
            fields = _dead_letter_fields(dead)
            args += [len(fields), DEAD_LETTERS_MAXLEN, *fields]
        for producer, results in per_producer.items():
            script_keys += [keys.seen(producer), keys.reply(producer), keys.abandoned(producer)]
            forgotten = dropped.get(producer, [])
            # In ranges only if every entry under the reply key asked for them: another client's
            # entry of version 2 never changes the form a version-1 producer reads.
            if producer in plain:
                message = encode_results(results)
            else:
                message = encode_ranges(results, ack.version)
            args += [seen[producer], message]
            args += [len(forgotten), *forgotten]
        args.append(len(ack.increments))
        for name, increment in ack.increments.items():
            args += [name, increment]
        status: dict[str, int | str] = {"last_flush_at_ms": int(time.time() * 1000)}
        status.update(ack.values)
        for name, value in status.items():
            args += [name, value]
        failures = await self._calls(self._script, script_keys, args)
        for failure in failures:
            logger.warning("after a flush of %d entries: %s", len(records_of), failure)


def _abandoned(answer: dict[str, str] | None) -> bool:
    """Whether ``answer`` says its record was abandoned by its producer (its seq is in the
    producer's abandoned set, which the ack then forgets)."""
    return answer is not None and answer.get("cause") == "abandoned"


def _dead_letter_fields(dead: DeadLetter) -> list[bytes | str | int]:
    fields: dict[bytes | str, bytes | str | int] = {}
    for name, value in dead.entry.fields.items():
        fields[name] = value
    if dead.entry.part is not None:  # one record of several: its own number
        fields[FIELD_SEQ] = str(dead.entry.seq)
    record = dead.entry.materialized()
    if dead.entry.block is not None and record is not None:  # a columnar entry's: on its own
        fields[FIELD_RECORD] = encode_record(record)
    fields.update(
        {
            FIELD_REASON: dead.reason,
            FIELD_DELIVERIES: dead.deliveries,
            FIELD_ORIGINAL_ID: dead.entry.entry_id,
            FIELD_DEAD_AT_MS: int(time.time() * 1000),
        }
    )
    return [part for pair in fields.items() for part in pair]
