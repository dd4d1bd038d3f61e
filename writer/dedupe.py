"""Dropping records a producer sent twice.

A producer that lost the connection before Redis confirmed a send cannot know whether the
entries were added, so it sends them again with the same sequence numbers. The writer remembers,
per producer, the highest sequence number it has settled (in Redis, written with each flush's
acks, and cached here) and acks any entry at or below it without writing it again. Producers
send in sequence order, so one number per producer is enough.
"""

from __future__ import annotations

from collections import OrderedDict

from lancequeue.common.keys import TableKeys
from lancequeue.common.redis_client import AsyncRedis

_CACHED_PRODUCERS = 100_000
_NONE = -1
"""What is remembered of a producer none of whose records were settled."""


class SeenSequences:
    """The highest settled sequence number of each producer."""

    def __init__(self, redis: AsyncRedis, keys: TableKeys) -> None:
        self._redis = redis
        self._keys = keys
        self._cache: OrderedDict[str, int] = OrderedDict()

    async def load(self, producer_ids: set[str]) -> None:
        """Fetch what Redis knows of producers not in the cache (one MGET)."""
        missing = self.missing(producer_ids)
        if missing:
            self.remember(missing, await self._redis.mget(self.keys_of(missing)))

    def missing(self, producer_ids: set[str]) -> list[str]:
        """The producers not in the cache, whose ``seen`` keys must be read."""
        return [pid for pid in producer_ids if pid not in self._cache]

    def keys_of(self, producer_ids: list[str]) -> list[str]:
        return [self._keys.seen(pid) for pid in producer_ids]

    def remember(self, producer_ids: list[str], values: list[bytes | str | None]) -> None:
        """Cache what an MGET of ``keys_of(producer_ids)`` returned."""
        for pid, value in zip(producer_ids, values, strict=True):
            self._remember(pid, int(value) if value is not None and value.isdigit() else _NONE)

    def settled(self, producer_id: str, seq: int) -> bool:
        """Whether this producer's ``seq`` was settled already (call ``load`` first)."""
        return seq <= self._cache.get(producer_id, _NONE)

    def advance(self, producer_id: str, seq: int) -> None:
        """Record ``seq`` as settled. A producer not cached is left to be loaded from Redis,
        where the flush's MULTI records it."""
        if producer_id in self._cache and seq > self._cache[producer_id]:
            self._remember(producer_id, seq)

    def _remember(self, producer_id: str, seq: int) -> None:
        self._cache[producer_id] = seq
        self._cache.move_to_end(producer_id)
        while len(self._cache) > _CACHED_PRODUCERS:
            self._cache.popitem(last=False)
