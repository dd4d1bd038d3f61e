"""The watermark and the dedupe memory on their own, without Redis or a table."""

from __future__ import annotations

import pytest

from lancequeue.writer import dedupe
from lancequeue.writer.dedupe import SeenSequences
from lancequeue.writer.watermark import SKIPPED_SILENTLY, Watermark

REJECTED = {"error": "RecordRejected", "message": "field 'id'", "cause": "RecordRejected"}


def test_a_watermark_covers_its_epoch_s_entries_up_to_its_last_id_by_number_not_text() -> None:
    mark = Watermark("e1", "10-3")
    assert mark.covers("e1", b"9-99")  # "9-99" > "10-3" as text
    assert mark.covers("e1", b"10-3")
    assert not mark.covers("e1", b"10-4")
    assert not mark.covers("e1", b"100-0")
    assert not mark.covers("e2", b"1-0")  # another epoch: Redis lost the stream since


def test_a_covered_record_is_written_unless_the_watermark_lists_it_skipped() -> None:
    mark = Watermark("e1", "10-3", {"10-1/0": REJECTED, "10-2/0": SKIPPED_SILENTLY})
    assert mark.outcome("10-0/0") is None
    assert mark.outcome("10-1/0") == REJECTED
    assert mark.outcome("10-2/0") == SKIPPED_SILENTLY


def test_a_watermark_survives_the_commit_properties_it_is_stored_in() -> None:
    mark = Watermark("e1", "10-3", {"10-1/0": REJECTED})
    properties = mark.properties(token=7, consumer="host-1-ab")
    assert all(isinstance(value, str) for value in properties.values())
    assert Watermark.from_properties(properties) == mark


@pytest.mark.parametrize(
    "properties",
    [
        None,
        {},
        {"lancequeue.epoch": "e1"},  # no last id: a commit made by something else
        {"lancequeue.watermark": "not-an-id"},
        {"lancequeue.watermark": "1-0", "lancequeue.skipped": "{not json"},
        {"lancequeue.watermark": "1-0", "lancequeue.skipped": "[1, 2]"},
    ],
)
def test_a_commit_without_a_readable_watermark_carries_none(
    properties: dict[str, str] | None,
) -> None:
    assert Watermark.from_properties(properties) is None


def test_the_highest_settled_sequence_is_kept_whichever_side_says_it_first() -> None:
    seen = SeenSequences()
    assert seen.highest("p") == -1
    seen.advance("p", 5)  # a batch in flight settles 5
    seen.learn("p", 3)  # a claim read Redis before that batch was acked: lags behind
    assert seen.highest("p") == 5
    seen.learn("p", 9)  # Redis is ahead (another writer settled more before)
    assert seen.highest("p") == 9
    seen.advance("p", 7)
    assert seen.highest("p") == 9
    assert seen.highest("q") == -1


def test_the_memory_keeps_the_producers_seen_most_recently(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(dedupe, "_CACHED_PRODUCERS", 2)
    seen = SeenSequences()
    seen.advance("a", 1)
    seen.advance("b", 1)
    seen.advance("a", 2)  # a is recent again
    seen.advance("c", 1)  # b is forgotten: the next claim reads it from Redis again
    assert (seen.highest("a"), seen.highest("b"), seen.highest("c")) == (2, -1, 1)
