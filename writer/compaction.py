"""When and what to compact: size-tiered, so the table never rots into thousands of tiny
fragments and no row is rewritten more than a few times.

Each flush appends one small fragment. Fragments are grouped in tiers by row count, each tier
``fanout`` times larger than the one below (tier 0: under ``fanout * max_batch`` rows). Once a
tier holds ``fanout`` fragments, they (and any smaller ones) are merged into one:
with fanout 16 and ``max_batch`` 128, 16 flushes make a 2,048-row fragment, 16 of those a
32,768-row one, and so on. A table of N rows then holds at most ``fanout - 1`` fragments per
tier (about ``(fanout - 1) * log_fanout(N / max_batch)``) and each row is rewritten once per
tier it climbs.

``--compact-every`` sets the fanout (``16``), or makes the check time-based (``30s``: at most
every 30 seconds, fanout 16); ``0`` turns compaction off.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lancequeue.common.errors import ConfigError

DEFAULT_FANOUT = 16
MAX_FRAGMENT_ROWS = 131_072
"""Fragments are merged up to this many rows and no further: a compaction's memory (Lance
buffers what it writes) then does not grow with the table. A table keeps about one fragment per
this many rows, plus the tiers below."""
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
    fragment_rows: list[int], unit_rows: int, fanout: int, max_rows: int = MAX_FRAGMENT_ROWS
) -> int | None:
    """The row count to compact towards, or None if no tier is full.

    Tier 0 holds fragments under ``unit_rows * fanout`` rows, tier i those from
    ``unit_rows * fanout**i`` to ``fanout`` times that. The highest tier holding ``fanout``
    fragments is merged, with every smaller fragment, into fragments of its upper limit, at
    most ``max_rows``; fragments of ``max_rows`` or more are left alone."""
    if fanout < 2 or not fragment_rows:
        return None
    base = max(1, unit_rows) * fanout
    counts: dict[int, int] = {}
    for rows in fragment_rows:
        if rows >= max_rows:
            continue
        tier, limit = 0, base
        while rows >= limit:
            tier, limit = tier + 1, limit * fanout
        counts[tier] = counts.get(tier, 0) + 1
    full = [tier for tier, count in counts.items() if count >= fanout]
    return min(base * fanout ** max(full), max_rows) if full else None
