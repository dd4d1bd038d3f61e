"""Size-tiered compaction: when the writer compacts, and what a compacted table keeps."""

from __future__ import annotations

import lance
import pytest

from lancequeue.common.errors import ConfigError
from lancequeue.producer import Producer
from lancequeue.writer.compaction import CompactionPolicy, compaction_target
from lancequeue.writer.settings import WriterSettings
from tests.support import StartWriter, gather, record, table_ids, wait_for


def test_compact_every_takes_fragments_seconds_or_zero() -> None:
    assert CompactionPolicy.parse("16") == CompactionPolicy(16, 0.0)
    assert CompactionPolicy.parse("30s") == CompactionPolicy(16, 30.0)
    assert not CompactionPolicy.parse("0").enabled
    for bad in ("1", "ten", "-3", "5m"):
        with pytest.raises(ConfigError, match="compact_every"):
            WriterSettings(table="docs", compact_every=bad)


def test_keep_versions_below_two_is_refused_naming_the_setting() -> None:
    with pytest.raises(ConfigError, match="keep_versions"):
        WriterSettings(table="docs", keep_versions=1)


def test_nothing_is_compacted_until_a_tier_is_full() -> None:
    assert compaction_target([128] * 15, 128, 16) is None
    assert compaction_target([128] * 16, 128, 16) == 2048


def test_a_full_higher_tier_is_merged_with_everything_below_it() -> None:
    rows = [32_768] * 16 + [2048, 128]  # tier 2 (32,768 to 524,287 rows) is full
    assert compaction_target(rows, 128, 16, max_rows=2**40) == 524_288
    assert compaction_target([32_768] * 15 + [2048] * 15 + [128] * 15, 128, 16) is None


def test_fragments_are_merged_up_to_a_cap_and_then_left_alone() -> None:
    assert compaction_target([32_768] * 16, 128, 16, max_rows=131_072) == 131_072
    assert compaction_target([131_072] * 40 + [128] * 3, 128, 16, max_rows=131_072) is None


def test_merged_fragments_land_in_the_next_tier_and_are_left_alone() -> None:
    assert compaction_target([2048] * 15 + [128] * 15, 128, 16) is None


def _fragments(db_uri: str) -> list[int]:
    dataset = lance.dataset(f"{db_uri}/docs.lance")
    return [fragment.metadata.physical_rows for fragment in dataset.get_fragments()]


def _version_count(db_uri: str) -> int | None:
    """The table's version count; None if a cleanup deleted a version while it was listed
    (Lance lists the manifests, then reads each one)."""
    try:
        return len(lance.dataset(f"{db_uri}/docs.lance").versions())
    except ValueError as exc:
        if "Not found" not in str(exc):
            raise
        return None


async def test_a_writer_keeps_the_fragment_count_bounded_and_every_row(
    start_writer: StartWriter, producer: Producer, db_uri: str
) -> None:
    start_writer(max_batch=2, coalesce_ms=60_000, compact_every=4, keep_versions=3)
    for first in range(0, 64, 2):  # 32 flushes of two records
        assert await gather(producer.enqueue_many([record(first), record(first + 1)])) == [None] * 2
    # Compaction runs beside the appends: the bound holds once the last one is done.
    rows = wait_for(
        lambda: (found := _fragments(db_uri)) and len(found) < 12 and found,
        30,
        "compaction to catch up",
    )  # 32 appends: tiers under 8, 32 and 128 rows hold at most 3 fragments each
    assert sum(rows) == 64
    assert table_ids(db_uri) == list(range(64))
    # the 3 kept at the last compaction, and at most 3 appends since (the 4th compacts)
    wait_for(
        lambda: (count := _version_count(db_uri)) is not None and count <= 3 + 3,
        30,
        "old versions to be cleaned up",
    )


async def test_compact_every_zero_leaves_one_fragment_per_flush(
    start_writer: StartWriter, producer: Producer, db_uri: str
) -> None:
    start_writer(max_batch=2, coalesce_ms=60_000, compact_every="0")
    for first in range(0, 12, 2):
        assert await gather(producer.enqueue_many([record(first), record(first + 1)])) == [None] * 2
    assert _fragments(db_uri) == [2] * 6
