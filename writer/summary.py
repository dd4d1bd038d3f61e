"""The writer's periodic one-line log summary: what it did since the last one."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping


class Summary:
    """Counts what acknowledged batches did, and says it in one line per interval."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._totals: Counter[str] = Counter()
        self._since = clock()

    def add(self, increments: Mapping[str, int]) -> None:
        """Count one acknowledgement's increments (``batches``, ``rows``, ``append_ms``...)."""
        self._totals.update(increments)

    def line(self) -> str | None:
        """What happened since the last line (or the start), and start counting anew; None if
        nothing did (an idle writer logs nothing)."""
        now = self._clock()
        elapsed_s = max(now - self._since, 1e-9)
        totals = self._totals
        if not any(totals.values()):
            self._since = now
            return None
        batches = totals["batches"]
        mean_append = f"{totals['append_ms'] / batches:.1f} ms" if batches else "-"
        text = (
            f"last {elapsed_s:.0f}s: {totals['rows']:,} rows in {batches:,} batches "
            f"({totals['rows'] / elapsed_s:,.0f} rows/s, mean append {mean_append}); "
            f"rejected {totals['rejected']:,}, failed {totals['failed']:,}, "
            f"expired {totals['expired']:,}, duplicates dropped {totals['duplicates']:,}, "
            f"recovered {totals['recovered']:,}; compactions {totals['compactions']:,}"
        )
        self._totals = Counter()
        self._since = now
        return text
