"""Compaction on its own, without Redis or a table: the policy, the size-tiered targets, and the
compactor's scheduling against a fake table."""

from __future__ import annotations

import asyncio
import random

import pytest

from lancequeue.common.errors import ConfigError, WriterReplaced
from lancequeue.writer import compaction
from lancequeue.writer.compaction import CompactionPolicy, Compactor, compaction_target
from lancequeue.writer.settings import WriterSettings
from lancequeue.writer.shutdown import Shutdown
from lancequeue.writer.summary import Summary
from tests.support import async_wait_for


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


def test_fragments_with_no_neighbour_to_merge_with_do_not_fill_a_tier() -> None:
    """Lance merges only neighbouring fragments: 16 small ones each between two large ones
    give it nothing to merge, so they start no compaction (every flush would otherwise plan
    one in vain), and they do not count towards the small fragments that do."""
    alone = [part for _ in range(16) for part in (131_072, 128)]
    assert compaction_target(alone, 128, 16) is None
    assert compaction_target([*alone, *[128] * 14], 128, 16) is None  # 15 with a neighbour
    assert compaction_target([*alone, *[128] * 15], 128, 16) == 2048
    # tier 0 full with no neighbours below 2,048 rows; tier 1 full, with neighbours below 32,768
    rows = [part for _ in range(16) for part in (131_072, 128, 2048)]
    assert compaction_target(rows, 128, 16) == 32_768


def test_fragments_are_merged_up_to_a_cap_and_then_left_alone() -> None:
    assert compaction_target([32_768] * 16, 128, 16, max_rows=131_072) == 131_072
    assert compaction_target([131_072] * 40 + [128] * 3, 128, 16, max_rows=131_072) is None


def test_merged_fragments_land_in_the_next_tier_and_are_left_alone() -> None:
    assert compaction_target([2048] * 15 + [128] * 15, 128, 16) is None


class FakeTable:
    """Fragments of 128 rows; each compaction merges the first 16 under its target into one,
    or fails as told."""

    def __init__(self, fragments: int, fail: BaseException | None = None) -> None:
        self.rows = [128] * fragments
        self.fail = fail
        self.calls: list[int] = []
        self.release = asyncio.Event()
        self.release.set()
        self.looks = 0

    def fragment_rows(self) -> list[int]:
        self.looks += 1
        return list(self.rows)

    async def compact(self, target_rows: int, keep_versions: int, commit_rows: int) -> list[int]:
        self.calls.append(target_rows)
        await self.release.wait()
        if self.fail is not None:
            raise self.fail
        small = [i for i, rows in enumerate(self.rows) if rows < target_rows][:16]
        merged = sum(self.rows[i] for i in small)
        self.rows = [
            merged if i == small[0] else rows
            for i, rows in enumerate(self.rows)
            if i == small[0] or i not in small
        ]
        return list(self.rows)


def compactor(table: FakeTable, spec: str = "16") -> tuple[Compactor, Shutdown, Summary]:
    shutdown, summary = Shutdown(), Summary()
    made = Compactor(CompactionPolicy.parse(spec), table, 128, 2, shutdown, summary)
    return made, shutdown, summary


async def test_a_commit_that_fills_a_tier_starts_a_compaction_that_merges_until_none_is_full() -> (
    None
):
    table = FakeTable(32)  # two tiers' worth of small fragments
    made, _, summary = compactor(table)
    made.committed()
    await made.wait()
    assert table.calls == [2048, 2048]  # merged again while a tier was still full
    assert table.rows == [2048, 2048]
    assert "compactions 2" in (summary.line() or "")


async def test_no_compaction_starts_while_one_runs_or_before_a_tier_is_full() -> None:
    table = FakeTable(16)
    table.release.clear()
    made, _, _ = compactor(table)
    made.committed()
    made.committed()  # one runs: no second one
    table.release.set()
    await made.wait()
    assert table.calls == [2048]
    made.committed()  # one fragment of 2,048 rows: nothing is full
    await made.wait()
    assert table.calls == [2048]


async def test_a_time_based_policy_looks_at_most_once_per_interval() -> None:
    table = FakeTable(15)
    made, _, _ = compactor(table, "3600s")
    made.committed()  # looks: 15 fragments, nothing to do; the next look is an hour away
    table.rows = [128] * 16
    made.committed()
    await made.wait()
    assert table.calls == []


async def test_compact_every_zero_never_compacts() -> None:
    table = FakeTable(64)
    made, _, _ = compactor(table, "0")
    made.committed()
    await made.wait()
    assert table.calls == []


async def test_a_compaction_another_writer_fenced_out_stops_the_writer_and_a_failed_one_does_not(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fenced = FakeTable(16, WriterReplaced("writer w2 holds the table"))
    made, shutdown, _ = compactor(fenced)
    made.committed()
    await made.wait()
    assert shutdown.replaced and shutdown.requested.is_set()
    failing = FakeTable(16, OSError("disk full"))
    made, shutdown, _ = compactor(failing)
    made.committed()
    await made.wait()  # never raises
    assert not shutdown.requested.is_set()
    assert "compaction failed" in caplog.text


async def test_while_batches_are_full_a_tier_waits_for_four_times_its_fragments() -> None:
    table = FakeTable(63)  # a backlog: every commit is of a full batch
    made, _, _ = compactor(table)
    made.committed(full=True)
    await made.wait()
    assert table.calls == []
    table.rows.append(128)
    made.committed(full=True)  # 64 fragments: merged, sixteen at a time
    await made.wait()
    assert table.rows == [2048] * 4


async def test_a_batch_that_is_not_full_compacts_what_the_backlog_left() -> None:
    table = FakeTable(20)
    made, _, _ = compactor(table)
    made.committed(full=True)
    await made.wait()
    assert table.calls == []
    made.committed(full=False)  # the backlog is drained
    await made.wait()
    assert table.calls == [2048]


async def test_a_backlog_that_ends_on_a_full_batch_is_compacted_once_no_commit_follows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(compaction, "CATCH_UP_S", 0.05)
    table = FakeTable(16)
    made, _, _ = compactor(table)
    made.committed(full=True)
    assert table.calls == []

    async def compacted() -> bool:
        return table.rows == [2048]

    await async_wait_for(compacted, 10, "the catch-up compaction")
    await made.wait()
    assert table.calls == [2048]


async def test_a_time_based_policy_does_not_defer_for_full_batches() -> None:
    table = FakeTable(16)
    made, _, _ = compactor(table, "3600s")
    made.committed(full=True)
    await made.wait()
    assert table.calls == [2048]


def test_mergeable_fragments_are_counted_per_tier_as_the_target_sees_them() -> None:
    rows = [part for _ in range(16) for part in (131_072, 128, 2048)] + [128] * 3
    assert compaction.mergeable_by_tier(rows, 128, 16) == {2048: 3, 32_768: 16}


async def test_appends_that_cannot_fill_a_tier_do_not_make_the_compactor_list_fragments() -> None:
    """After a look, each commit of k fragments can make at most k + 1 more mergeable in a tier;
    until that could fill one, the fragments are not listed again."""
    table = FakeTable(0)
    made, _, _ = compactor(table)
    for _ in range(15):
        table.rows.append(128)
        made.committed(added=1)
    await made.wait()
    assert table.calls == [] and table.looks <= 5
    table.rows.append(128)
    made.committed(added=1)  # the sixteenth: merged at once
    await made.wait()
    assert table.calls == [2048]


@pytest.mark.parametrize("seed", range(20))
async def test_skipping_looks_never_delays_a_compaction(seed: int) -> None:
    """The same commits, told how many fragments each added or not: the compactions start at
    the same commits, with the same targets, and the same deferrals are caught up."""
    rnd = random.Random(seed)
    steps = [
        (
            [rnd.choice([128, 128, 64]) for _ in range(rnd.choice([1, 1, 1, 2, 3]))],
            rnd.random() < 0.7,
        )
        for _ in range(400)
    ]  # each commit's fragments, and whether its batch was full
    timelines = []
    for told in (False, True):
        table = FakeTable(0)
        made, _, _ = compactor(table)
        timeline = []
        for fragments, full in steps:
            table.rows += fragments
            made.committed(full=full, added=len(fragments) if told else None)
            catching_up = made._catch_up is not None  # a deferral's catch-up is due
            await made.wait()
            timeline.append((list(table.calls), catching_up))
        timelines.append(timeline)
    assert timelines[0] == timelines[1]
    assert timelines[0][-1][0]  # compactions did run
    assert any(catching_up for _, catching_up in timelines[0])  # and deferrals


async def test_a_deferral_is_caught_up_even_when_the_commits_after_it_skip_the_look(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(compaction, "CATCH_UP_S", 0.05)
    table = FakeTable(0)
    made, _, _ = compactor(table)
    for _ in range(20):  # a backlog: tier 0 holds 20, under the 64 it waits for
        table.rows.append(128)
        made.committed(full=True, added=1)
    assert table.calls == []

    async def compacted() -> bool:
        return table.calls == [2048]

    await async_wait_for(compacted, 10, "the catch-up compaction")
    await made.wait()
    assert table.looks < 20
