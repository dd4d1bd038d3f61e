"""Dropping records a producer sent twice.

A producer that lost the connection before Redis confirmed a send cannot know whether the
entries were added, so it sends them again with the same sequence numbers. The writer knows,
per producer, the highest sequence number it has settled (in Redis, raised with each flush's
acks and read with each batch's claim) and answers any entry at or below it as a copy, never
writing it again. Producers send in sequence order, so one number per producer is enough.

Batches overlap (the next ones are built and written while the one before is committed and
answered), so the numbers Redis returns may lag behind the batches in flight: this keeps the
higher of the two.
"""

from __future__ import annotations

from collections import OrderedDict

_CACHED_PRODUCERS = 100_000
_NONE = -1
"""What is known of a producer none of whose records were settled."""


class SeenSequences:
    """The highest settled (or being settled) sequence number of each producer."""

    def __init__(self) -> None:
        self._cache: OrderedDict[str, int] = OrderedDict()

    def learn(self, producer_id: str, settled_in_redis: int) -> None:
        """What the batch's claim read from Redis (-1: nothing settled)."""
        if settled_in_redis > self._cache.get(producer_id, _NONE):
            self._remember(producer_id, settled_in_redis)

    def highest(self, producer_id: str) -> int:
        """The producer's highest sequence number settled or in flight (-1: none)."""
        return self._cache.get(producer_id, _NONE)

    def advance(self, producer_id: str, seq: int) -> None:
        """Record ``seq`` as settled by the batch being built."""
        if seq > self._cache.get(producer_id, _NONE):
            self._remember(producer_id, seq)

    def _remember(self, producer_id: str, seq: int) -> None:
        self._cache[producer_id] = seq
        self._cache.move_to_end(producer_id)
        while len(self._cache) > _CACHED_PRODUCERS:
            self._cache.popitem(last=False)
