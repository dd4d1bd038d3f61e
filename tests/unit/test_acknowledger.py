"""The ack-and-answer script's arguments (``writer/acknowledger.py``): a columnar entry whose
records were all written is answered in one look, and must give exactly the arguments its
records answered one by one give (no Redis: the script call is captured)."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from lancequeue.common.keys import TableKeys
from lancequeue.common.replies import decode_reply, error_payload
from lancequeue.writer.acknowledger import Acknowledgement, Acknowledger
from lancequeue.writer.entries import ColumnBlock, Entry
from lancequeue.writer.watermark import SKIPPED_SILENTLY
from tests.support import columnar_entry

KEYS = TableKeys("docs")
OUTCOMES = {
    "written": None,
    "rejected": error_payload("RecordRejected", "does not fit", "RecordRejected"),
    "abandoned": error_payload("WriteTimeout", "abandoned", "abandoned"),
    "silent": SKIPPED_SILENTLY,
}


class Captured:
    """Stands in for the script calls: keeps the arguments of each."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[Any], list[Any]]] = []

    def register(self, source: str) -> None:
        return None

    async def __call__(self, script: object, keys: list[Any], args: list[Any]) -> list[Any]:
        self.calls.append((list(keys), list(args)))
        return []


def script_arguments(entries: list[Entry], answers: dict[str, Any]) -> tuple[list[Any], list[Any]]:
    calls = Captured()
    acks = Acknowledger(calls, KEYS, 60_000, 10_000, 1024)  # type: ignore[arg-type]
    ack = Acknowledgement(entries, answers, {"rows": 1}, {"table_rows": 5}, [], 7)
    asyncio.run(acks.send(ack))
    keys, args = calls.calls[0]
    status_at = args.index("last_flush_at_ms")
    return keys, args[:status_at] + args[status_at + 2 :]  # the flush's wall-clock time aside


def one_by_one(entries: list[Entry]) -> list[Entry]:
    """The same records, each with a block of its own: no entry is answered in one look."""
    alone = []
    for entry in entries:
        copy = Entry(
            entry.entry_id,
            entry.reply_key,
            entry.seq,
            entry.record,
            entry.rejection,
            entry.deadline_ms,
            entry.fields,
            entry.part,
            ColumnBlock(entry.block.columns, entry.block.count, b"", entry.version)
            if entry.block is not None
            else None,
            entry.version,
        )
        alone.append(copy)
    return alone


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["p", "q"]),
            st.integers(1, 4),
            st.lists(st.sampled_from([*sorted(OUTCOMES), "missing"]), min_size=4, max_size=4),
        ),
        min_size=1,
        max_size=5,
    )
)
def test_an_entry_answered_at_once_gives_the_arguments_of_its_records_answered_one_by_one(
    specs: list[tuple[str, int, list[str]]],
) -> None:
    entries: list[Entry] = []
    answers: dict[str, Any] = {}
    next_seq = {"p": 1, "q": 1}
    for number, (producer, count, outcomes) in enumerate(specs):
        parts = columnar_entry(
            KEYS, f"{1000 + number}-0".encode(), producer, next_seq[producer], count
        )
        next_seq[producer] += count
        for part, outcome in zip(parts, outcomes, strict=False):
            if outcome != "missing":
                answers[part.record_id] = OUTCOMES[outcome]
        entries += parts
    assert script_arguments(entries, answers) == script_arguments(one_by_one(entries), answers)


def test_a_written_entry_is_answered_in_one_range_per_producer() -> None:
    """The test above compares two ways of answering; this one pins what they give."""
    entries = columnar_entry(KEYS, b"1000-0", "p", 1, 3) + columnar_entry(
        KEYS, b"1001-0", "p", 4, 2
    )
    _, args = script_arguments(entries, {entry.record_id: None for entry in entries})
    assert args[5:10] == [2, b"1000-0", 3, b"1001-0", 2]  # two entries: their record counts
    assert args[10] == 0  # no dead letters
    assert args[11] == 5  # the producer's highest seq answered
    reply = decode_reply(args[12])
    assert (reply.written, reply.errors, reply.version) == ([(1, 5, b"12345678")], [], 7)
    assert args[13] == 0  # no abandoned seq to forget


def test_an_abandoned_record_is_answered_and_its_seq_forgotten() -> None:
    entries = columnar_entry(KEYS, b"1000-0", "p", 1, 3)
    answers = {entry.record_id: None for entry in entries}
    answers[entries[1].record_id] = OUTCOMES["abandoned"]
    _, args = script_arguments(entries, answers)
    assert args[5:9] == [1, b"1000-0", 3, 0]  # one entry of 3 records, no dead letters
    assert args[9] == 3  # the producer's highest seq answered
    reply = decode_reply(args[10])
    assert [seq for seq, _ in reply.errors] == [2]
    assert reply.written == [(1, 1, b"12345678"), (3, 3, b"12345678")]
    assert args[11:13] == [1, 2]  # one abandoned seq to forget: 2
