"""When and what to compact: size-tiered, so the table never rots into thousands of tiny
fragments and no row is rewritten more than a few times.

Each flush appends one small fragment. Fragments are grouped in tiers by row count, each tier
``fanout`` times larger than the one below (tier 0: under ``fanout * max_batch`` rows). Once a
tier holds ``fanout`` fragments, they (and any smaller ones) are merged into one:
with fanout 16 and ``max_batch`` 128, 16 flushes make a 2,048-row fragment, 16 of those a
32,768-row one, and so on. A table of N rows then holds at most ``fanout - 1`` fragments per
tier (about ``(fanout - 1) * log_fanout(N / max_batch)``) and each row is rewritten once per
tier it climbs. One commit merges up to ``MAX_FRAGMENT_ROWS`` source rows (the oldest
first; more only if one Lance task holds more), so a large merge is several short
compactions: between two of them, each tier that filled meanwhile is looked at again, and the
small fragments of a busy table do not pile up behind it.

While the writer drains a backlog (its batches are full), a merge would take the cores the
appends need, and merging later costs no more: a tier then waits until it holds
``BACKLOG_DEFERRAL`` times ``fanout`` fragments, and the first batch that is not full, or
``CATCH_UP_S`` without a commit, compacts what the backlog left. A table that is never idle
still compacts, in larger merges.

``--compact-every`` sets the fanout (``16``), or makes the check time-based (``30s``: at most
every 30 seconds, fanout 16); ``0`` turns compaction off.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import lance
from lance.optimize import Compaction, CompactionOptions

from lancequeue.common.errors import ConfigError, WriterReplaced
from lancequeue.writer.shutdown import Shutdown
from lancequeue.writer.summary import Summary

logger = logging.getLogger(__name__)

DEFAULT_FANOUT = 16
MAX_FRAGMENT_ROWS = 131_072
"""Fragments are merged up to this many rows and no further, and one compaction commit merges
up to this many source rows (or one Lance task's): a compaction's memory and time then do not
grow with the table. A table keeps about one fragment per this many rows, plus the tiers
below."""
BACKLOG_DEFERRAL = 4
"""While batches are full, a tier is merged once it holds this many times ``fanout``
fragments (with ``fanout`` 16 and ``max_batch`` 1024: 64 fragments, 65,536 rows, under one
compaction commit's ``MAX_FRAGMENT_ROWS``)."""
CATCH_UP_S = 1.0
"""Time without a commit after a deferred check, after which the tiers are checked as usual."""
_SPEC = re.compile(r"^(\d+)(s?)$")


@dataclass(frozen=True)
class CompactionPolicy:
    """How often to look, and how many fragments of a tier make a compaction."""

    fanout: int
    """Fragments of one tier that are merged together; 0: never compact."""
    interval_s: float
    """Least time between two looks (0: after every flush)."""

    @classmethod
    def parse(cls, spec: str) -> CompactionPolicy:
        """``"16"`` (fanout, checked after every flush), ``"30s"`` (checked at most every 30
        seconds, fanout 16) or ``"0"`` (never)."""
        match = _SPEC.match(spec.strip())
        if match is None:
            raise ConfigError(
                f"compact_every must be a number of fragments (16), seconds (30s) or 0, "
                f"got {spec!r}"
            )
        number, seconds = int(match.group(1)), bool(match.group(2))
        if number == 0:
            return cls(0, 0.0)
        if seconds:
            return cls(DEFAULT_FANOUT, float(number))
        if number < 2:
            raise ConfigError(f"compact_every must merge at least 2 fragments, got {spec!r}")
        return cls(number, 0.0)

    @property
    def enabled(self) -> bool:
        return self.fanout > 0


def compaction_target(
    fragment_rows: list[int],
    unit_rows: int,
    fanout: int,
    max_rows: int = MAX_FRAGMENT_ROWS,
) -> int | None:
    """The row count to compact towards, or None if no tier is full (holds ``fanout``
    mergeable fragments).

    Tier 0 holds fragments under ``unit_rows * fanout`` rows, tier i those from
    ``unit_rows * fanout**i`` to ``fanout`` times that. The highest tier holding ``fanout``
    fragments is merged, with every smaller fragment, into fragments of its upper limit, at
    most ``max_rows``; fragments of ``max_rows`` or more are left alone.

    ``fragment_rows`` is in table order, and Lance merges only neighbours: a fragment with no
    neighbour under its tier's limit (an append made during a compaction can end up between
    two large fragments) does not count towards its tier being full. Otherwise such strays
    would keep a tier "full" with nothing Lance could merge, and every flush would plan a
    compaction in vain."""
    counts = mergeable_by_tier(fragment_rows, unit_rows, fanout, max_rows)
    return _full_tier(counts, fanout)


def mergeable_by_tier(
    fragment_rows: list[int], unit_rows: int, fanout: int, max_rows: int = MAX_FRAGMENT_ROWS
) -> dict[int, int]:
    """Per tier's target row count (see ``compaction_target``), its mergeable fragments: those
    of the tier with a neighbour under the target."""
    counts: dict[int, int] = {}
    if fanout < 2 or not fragment_rows:
        return counts
    base = max(1, unit_rows) * fanout
    last = len(fragment_rows) - 1
    for index, rows in enumerate(fragment_rows):
        if rows >= max_rows:
            continue
        target = min(base * fanout ** _tier(rows, base, fanout), max_rows)
        left = fragment_rows[index - 1] if index > 0 else None
        right = fragment_rows[index + 1] if index < last else None
        if (left is not None and left < target) or (right is not None and right < target):
            counts[target] = counts.get(target, 0) + 1
    return counts


def _full_tier(counts: dict[int, int], full_at: int) -> int | None:
    """The target of the highest tier holding ``full_at`` mergeable fragments, or None."""
    return max((target for target, count in counts.items() if count >= full_at), default=None)


def _tier(rows: int, base: int, fanout: int) -> int:
    tier, limit = 0, base
    while rows >= limit:
        tier, limit = tier + 1, limit * fanout
    return tier


class Compactor:
    """Runs the compactions a policy calls for, one at a time, beside the appends (a Lance
    ``Rewrite`` commits over concurrent appends: a batch may wait for its commit, never for
    the merge)."""

    def __init__(
        self,
        policy: CompactionPolicy,
        sink: CompactingSink,
        unit_rows: int,
        keep_versions: int,
        shutdown: Shutdown,
        summary: Summary,
        upkeep: asyncio.Lock | None = None,
    ) -> None:
        self._policy = policy
        self._sink = sink
        self._unit_rows = unit_rows
        self._keep_versions = keep_versions
        self._shutdown = shutdown
        self._summary = summary
        self._upkeep = upkeep or asyncio.Lock()
        """Held by each compaction and each index upkeep (``indexing.py``): one at a time."""
        self._next_check = 0.0
        self._running: asyncio.Task[None] | None = None
        self._catch_up: asyncio.TimerHandle | None = None
        """Checks the tiers as usual once no commit came for ``CATCH_UP_S`` after a deferral."""
        self._most: int | None = None
        """The most mergeable fragments of a tier at the last check (None: look again)."""
        self._grown = 0
        """How many more the commits since that check may have made mergeable."""
        self._behind = False
        """Whether a tier held ``fanout`` mergeable fragments then (a deferral to catch up)."""

    def committed(self, full: bool = False, added: int | None = None) -> None:
        """After an append's commit (``full``: of a full batch, so a backlog is draining;
        ``added``: the fragments it added at the end of the table, None if it may have changed
        others, as a merge or a delete may): start compacting if the policy's interval is up, a
        tier is full and no compaction is running."""
        self._cancel_catch_up()
        if added is None:
            self._most = None
        else:  # each new fragment, and the one before them, may now count as mergeable
            self._grown += added + 1
        now = time.monotonic()
        if not self._policy.enabled or now < self._next_check:
            return
        if self._running is not None and not self._running.done():
            return
        fanout = self._policy.fanout
        deferring = full and not self._policy.interval_s
        full_at = fanout * BACKLOG_DEFERRAL if deferring else fanout
        # a look once a tier may hold enough to compact, or to catch up on later (``_behind``)
        if self._most is None or self._most + self._grown >= (full_at if self._behind else fanout):
            self._next_check = now + self._policy.interval_s
            counts = mergeable_by_tier(self._sink.fragment_rows(), self._unit_rows, fanout)
            self._most, self._grown = max(counts.values(), default=0), 0
            self._behind = _full_tier(counts, fanout) is not None
            target = _full_tier(counts, full_at)
            if target is not None:
                self._most = None  # the compaction changes the fragments: look again after it
                self._running = asyncio.create_task(
                    self._compact(target), name="lancequeue-compaction"
                )
                return
        # else no tier can be full yet: not worth listing the fragments again
        if deferring and self._behind:
            self._catch_up = asyncio.get_running_loop().call_later(CATCH_UP_S, self.committed)

    def _cancel_catch_up(self) -> None:
        if self._catch_up is not None:
            self._catch_up.cancel()
            self._catch_up = None

    async def wait(self) -> None:
        """Wait for the running compaction, if any (it never raises); a catch-up not yet due
        is dropped."""
        self._cancel_catch_up()
        if self._running is not None:
            await self._running

    async def _compact(self, target_rows: int) -> None:
        """Compact towards ``target_rows``, then again while another tier is full (appends
        made during one compaction may fill one)."""
        try:
            target: int | None = target_rows
            while target is not None and not self._shutdown.requested.is_set():
                async with self._upkeep:
                    rows = await self._sink.compact(target, self._keep_versions, MAX_FRAGMENT_ROWS)
                if rows is None:
                    return  # nothing merged: the next append looks again
                self._summary.add({"compactions": 1})
                target = compaction_target(rows, self._unit_rows, self._policy.fanout)
        except WriterReplaced as exc:
            self._shutdown.replace(exc)
        except Exception:  # compaction is housekeeping: never stops the writer
            logger.exception("compaction failed; will try again later")


class CompactingSink(Protocol):
    """What the compactor needs of the table (``table.TableSink``)."""

    def fragment_rows(self) -> list[int]: ...

    async def compact(
        self, target_rows: int, keep_versions: int, commit_rows: int
    ) -> list[int] | None: ...


def first_tasks(tasks: Sequence[Any], rows: int) -> list[Any]:
    """The first of a compaction plan's ``tasks`` (each merging adjacent fragments), in table
    order, that together merge at most ``rows`` source rows; the first task alone if it holds
    more (Lance's own ``max_source_rows`` would then plan nothing at all)."""
    chosen: list[Any] = []
    merged = 0
    for task in tasks:
        task_rows = sum(fragment.physical_rows for fragment in task.fragments)
        if chosen and merged + task_rows > rows:
            break
        chosen.append(task)
        merged += task_rows
    return chosen


_COMPACTION_THREADS = 1
_COMPACTION_BATCH_ROWS = 1024
"""Compaction reads and writes this many rows at a time, on one thread: it runs beside the
appends, and its memory stays small."""


def plan_rewrites(
    dataset: lance.LanceDataset, target_rows: int, commit_rows: int
) -> tuple[list[Any], CompactionOptions] | None:
    """The rewrites of one compaction of ``dataset`` (its oldest fragments under
    ``target_rows`` rows merged into fragments of about that many, up to ``commit_rows`` source
    rows: ``first_tasks``), executed and ready to commit, with their options; None if Lance
    finds nothing to merge."""
    options = CompactionOptions(
        target_rows_per_fragment=target_rows,
        num_threads=_COMPACTION_THREADS,
        batch_size=_COMPACTION_BATCH_ROWS,
        # Pages copied as they are, not decoded and encoded again: in a measurement here,
        # half the CPU and less memory, and scans of the result no slower.
        compaction_mode="try_binary_copy",
    )
    plan = Compaction.plan(dataset, options)
    if plan.num_tasks() == 0:
        return None
    return [task.execute(dataset) for task in first_tasks(plan.tasks, commit_rows)], options
