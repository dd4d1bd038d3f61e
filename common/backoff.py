"""Bounded exponential backoff with full jitter, for reconnecting to Redis."""

from __future__ import annotations

from dataclasses import dataclass, field

from redis.backoff import FullJitterBackoff

_MOST_DOUBLINGS = 64


@dataclass
class Backoff:
    """Reconnection delays with full jitter (redis-py's ``FullJitterBackoff``): the n-th delay
    after a failure is drawn uniformly between 0 and a ceiling that doubles from ``initial_s``
    up to ``max_s``, so processes that lost Redis together do not come back in lockstep.
    ``reset()`` after a success."""

    initial_s: float = 0.05
    max_s: float = 5.0
    _failures: int = 0
    _jitter: FullJitterBackoff = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._jitter = FullJitterBackoff(cap=self.max_s, base=self.initial_s)

    def next_delay(self) -> float:
        delay = self._jitter.compute(self._failures)
        # Past the cap long since: counting on would only overflow (redis-py before 8.2).
        self._failures = min(self._failures + 1, _MOST_DOUBLINGS)
        return delay

    def reset(self) -> None:
        self._failures = 0
