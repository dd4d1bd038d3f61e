"""Screening a claimed batch (``writer/screening.py``): a columnar entry screened in one look
must come out exactly as its records screened one by one would (no Redis)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from lancequeue.common.keys import TableKeys
from lancequeue.writer import screening
from lancequeue.writer.claims import BatchClaim, ProducerClaim
from lancequeue.writer.dedupe import SeenSequences
from lancequeue.writer.entries import Entry
from lancequeue.writer.settlement import Settlement
from tests.support import columnar_entry

KEYS = TableKeys("docs")
NOW_MS = 1_000_000

# One entry of the batch: producer, first seq, records, deadline passed, rejected positions.
entry_specs = st.tuples(
    st.sampled_from(["p", "q"]),
    st.integers(0, 12),
    st.integers(1, 4),
    st.booleans(),
    st.frozensets(st.integers(0, 3), max_size=2),
)


def columnar(entry_number: int, spec: tuple[str, int, int, bool, frozenset[int]]) -> list[Entry]:
    producer, first, count, late, rejected = spec
    parts = columnar_entry(KEYS, f"{1000 + entry_number}-0".encode(), producer, first, count)
    for part in parts:
        part.deadline_ms = NOW_MS - 1 if late else NOW_MS + 60_000
        if part.part in rejected:
            part.rejection = "a value that does not fit"
    return parts


def one_by_one(
    entries: list[Entry], refused: set[bytes], claimed: BatchClaim, seen: SeenSequences
) -> tuple[list[Entry], Settlement, dict[str, int]]:
    """The reference: every record screened on its own."""
    result, highest = Settlement(), {}
    settled: dict[str, int] = {}
    in_batch: dict[str, set[int]] = {}
    writable = [
        entry
        for entry in entries
        if screening._screen_one(entry, refused, claimed, seen, result, highest, settled, in_batch)
    ]
    return writable, result, highest


@settings(max_examples=300, deadline=None)
@given(
    st.lists(entry_specs, min_size=1, max_size=6),
    st.dictionaries(st.sampled_from(["p", "q"]), st.integers(-1, 6)),
    st.dictionaries(st.sampled_from(["p", "q"]), st.frozensets(st.integers(0, 16), max_size=3)),
    st.frozensets(st.integers(0, 5), max_size=2),
)
def test_an_entry_screened_at_once_comes_out_as_its_records_screened_one_by_one(
    specs: list[tuple[str, int, int, bool, frozenset[int]]],
    floors: dict[str, int],
    abandoned: dict[str, frozenset[int]],
    refused_numbers: frozenset[int],
) -> None:
    entries = [part for number, spec in enumerate(specs) for part in columnar(number, spec)]
    refused = {f"{1000 + number}-0".encode() for number in refused_numbers}
    claimed = BatchClaim(
        NOW_MS,
        {
            producer: ProducerClaim(
                floors.get(producer, -1), abandoned=abandoned.get(producer, frozenset())
            )
            for producer in ("p", "q")
        },
    )
    seen = SeenSequences()
    for producer, floor in floors.items():
        seen.learn(producer, floor)
    result, highest = Settlement(), {}
    writable = screening.screen(entries, refused, claimed, seen, result, highest)
    expected, expected_result, expected_highest = one_by_one(entries, refused, claimed, seen)
    assert [entry.record_id for entry in writable] == [entry.record_id for entry in expected]
    assert result.answers == expected_result.answers
    assert result.silent == expected_result.silent
    assert highest == expected_highest
    counts = ("duplicates", "expired", "ignored")
    assert [getattr(result, name) for name in counts] == [
        getattr(expected_result, name) for name in counts
    ]
