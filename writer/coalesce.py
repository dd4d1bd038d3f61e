"""When to flush: the coalescing rule, free of I/O so it can be tested on its own.

A batch is flushed ``coalesce_ms`` after its first record arrived, or as soon as ``max_batch``
records (or ``max_bytes`` bytes of them) are in hand, whichever comes first.
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
    ) -> None:
        self.coalesce_s = coalesce_ms / 1000
        self.max_batch = max_batch
        self.max_block_ms = max_block_ms
        self._clock = clock
        self.max_bytes = max_bytes
        self._size = size
        self._bytes = 0
        self._entries: list[T] = []
        self._first_at = 0.0

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, entries: list[T]) -> None:
        if entries and not self._entries:
            self._first_at = self._clock()
        self._entries.extend(entries)
        self._bytes += sum(self._size(entry) for entry in entries)

    @property
    def room(self) -> int:
        """Entries the next read may take."""
        return max(0, self.max_batch - len(self._entries))

    def due(self) -> bool:
        """Whether the batch in hand must be flushed now."""
        if not self._entries:
            return False
        if len(self._entries) >= self.max_batch:
            return True
        if self.max_bytes is not None and self._bytes >= self.max_bytes:
            return True
        return self._clock() - self._first_at >= self.coalesce_s

    def block_ms(self) -> int:
        """How long the next read may block: the rest of the window, at most ``max_block_ms``
        (so a stop request is seen promptly even during a long window)."""
        if not self._entries:
            return self.max_block_ms
        remaining_s = self.coalesce_s - (self._clock() - self._first_at)
        return min(self.max_block_ms, max(1, math.ceil(remaining_s * 1000)))

    def take(self) -> list[T]:
        """Hand over the batch and start a new one."""
        entries, self._entries = self._entries, []
        self._bytes = 0
        return entries
