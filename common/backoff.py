"""Bounded exponential backoff for reconnecting to Redis."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Backoff:
    """Delays that double from ``initial_s`` up to ``max_s``; ``reset()`` after a success."""

    initial_s: float = 0.05
    max_s: float = 5.0
    _next_s: float = 0.0

    def next_delay(self) -> float:
        self._next_s = self.initial_s if self._next_s == 0.0 else min(self._next_s * 2, self.max_s)
        return self._next_s

    def reset(self) -> None:
        self._next_s = 0.0
