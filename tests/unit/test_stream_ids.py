"""Stream ids are read in one place: ordering, the time they carry, and what is malformed."""

from __future__ import annotations

import pytest

from lancequeue.common.stream_ids import id_ms, is_stream_id, parse_id


def test_ids_compare_by_time_then_sequence_not_as_text() -> None:
    ids = ["9-5", "10-0", "10-10", "10-9", "1700000000000-0"]
    assert sorted(ids, key=parse_id) == ["9-5", "10-0", "10-9", "10-10", "1700000000000-0"]
    assert parse_id(b"10-9") == parse_id("10-9") == (10, 9)


def test_an_id_without_a_sequence_reads_as_sequence_zero_as_redis_reads_it() -> None:
    assert parse_id("42") == (42, 0)


def test_the_time_of_an_id_is_its_first_part_in_bytes_and_text() -> None:
    assert id_ms(b"1700000000123-7") == id_ms("1700000000123-7") == 1700000000123


@pytest.mark.parametrize("bad", ["", "-1", "a-1", "1-b", "1.5-0"])
def test_a_malformed_id_raises_value_error(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_id(bad)


@pytest.mark.parametrize(
    ("text", "whole"),
    [
        ("1-0", True),
        ("1700000000000-12", True),
        ("1", False),
        ("1-", False),
        ("-1", False),
        ("1-0\n", False),
        (" 1-0", False),
        ("1-0-0", False),
        ("x-0", False),
    ],
)
def test_only_a_whole_ms_dash_seq_names_an_entry(text: str, whole: bool) -> None:
    assert is_stream_id(text) is whole
