"""When to flush: the coalescing rule, free of I/O so it can be tested on its own.

A batch is flushed ``coalesce_ms`` after its first record arrived in the stream, or as soon as
``max_batch`` records (or ``max_bytes`` bytes of them) are in hand, whichever comes first. The
window is counted from the record's arrival, not from when the writer read it: records that
waited in the stream while the writer was busy (a backlog) are flushed at once, and the window
only bounds the latency of a lone record. A batch due by its window but not full is topped up
first with whatever else is waiting in the stream (a read that does not wait), so under a
backlog every batch is full.

Stream entries may carry several records (``count``); a batch holds whole entries, so one read
that brought more records than ``max_batch`` leaves the extra entries for the next batch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Coalescer(Generic[T]):
    """Accumulates entries and says how long the next read may block."""

    def __init__(
        self,
        coalesce_ms: int,
        max_batch: int,
        max_block_ms: int,
        clock: Callable[[], float] = time.monotonic,
        max_bytes: int | None = None,
        size: Callable[[T], int] = lambda _: 0,
        count: Callable[[T], int] = lambda _: 1,
    ) -> None:
        self.coalesce_s = coalesce_ms / 1000
        self.max_batch = max_batch
        self.max_block_ms = max_block_ms
        self._clock = clock
        self.max_bytes = max_bytes
        self._size = size
        self._count = count
        self._entries: list[tuple[T, int, int]] = []  # entry, its records, its bytes
        self._records = 0
        self._bytes = 0
        self._first_at = 0.0
        self._records_per_entry = 1

    def __len__(self) -> int:
        """Records in hand."""
        return self._records

    def add(self, entries: list[T], waited_s: float = 0.0) -> None:
        """Take entries just read; ``waited_s`` is how long the first of them had been in the
        stream (it counts against the window of a batch it starts)."""
        if not entries:
            return
        if not self._entries:
            self._first_at = self._clock() - max(0.0, waited_s)
        records = 0
        for entry in entries:
            count, size = max(1, self._count(entry)), self._size(entry)
            self._entries.append((entry, count, size))
            records += count
            self._bytes += size
        self._records += records
        self._records_per_entry = max(1, records // len(entries))

    @property
    def room(self) -> int:
        """Entries the next read may take: enough for the records the batch still has room
        for, judging by how many records the last entries carried."""
        records = self.max_batch - self._records
        if records <= 0:
            return 0
        return max(1, records // self._records_per_entry)

    @property
    def room_bytes(self) -> int | None:
        """Bytes the next read may bring: what ``max_bytes`` leaves (None: no bound)."""
        if self.max_bytes is None:
            return None
        return max(1, self.max_bytes - self._bytes)

    def full(self) -> bool:
        """Whether the records in hand reach ``max_batch`` or ``max_bytes``."""
        if self._records >= self.max_batch:
            return True
        return self.max_bytes is not None and self._bytes >= self.max_bytes

    def due(self) -> bool:
        """Whether the batch in hand must be flushed now."""
        if not self._entries:
            return False
        return self.full() or self._clock() - self._first_at >= self.coalesce_s

    def block_ms(self) -> int:
        """How long the next read may block: the rest of the window, at most ``max_block_ms``
        (so a stop request is seen promptly even during a long window)."""
        if not self._entries:
            return self.max_block_ms
        remaining_s = self.coalesce_s - (self._clock() - self._first_at)
        return min(self.max_block_ms, max(1, math.ceil(remaining_s * 1000)))

    def take(self) -> list[T]:
        """Hand over a batch: whole entries, in order, up to ``max_batch`` records and
        ``max_bytes`` bytes (at least one entry). Entries beyond stay for the next batch, whose
        window started when they arrived."""
        taken = 0
        records = size = 0
        for _, count, entry_bytes in self._entries:
            over_records = records + count > self.max_batch
            over_bytes = self.max_bytes is not None and size + entry_bytes > self.max_bytes
            if taken and (over_records or over_bytes):
                break
            taken += 1
            records += count
            size += entry_bytes
        batch = [entry for entry, _, _ in self._entries[:taken]]
        del self._entries[:taken]
        self._records -= records
        self._bytes -= size
        return batch
