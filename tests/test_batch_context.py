"""The writer's one round trip before each batch: Redis time, the lease holder and producers'
settled sequence numbers."""

from __future__ import annotations

import redis
import redis.asyncio as aioredis

from lancequeue.common.keys import TableKeys
from lancequeue.writer.batch_context import BatchContextReader

KEYS = TableKeys("docs")


async def test_a_batch_from_ten_thousand_new_producers_reads_every_settled_sequence(
    redis_url: str, client: redis.Redis
) -> None:
    producers = [f"p{i}" for i in range(10_000)]
    client.mset({KEYS.seen(pid): i for i, pid in enumerate(producers) if i % 2 == 0})
    client.set(KEYS.lease, "writer-a 7")
    async with aioredis.Redis.from_url(redis_url) as connection:
        context = await BatchContextReader(connection, KEYS).read(
            [KEYS.seen(pid) for pid in producers]
        )
    assert context.lease_holder == "writer-a 7"
    assert context.seen == [str(i).encode() if i % 2 == 0 else None for i in range(10_000)]
    redis_seconds, _ = client.time()
    assert abs(context.now_ms / 1000 - redis_seconds) < 5


async def test_a_free_lease_reads_as_no_holder(redis_url: str) -> None:
    async with aioredis.Redis.from_url(redis_url) as connection:
        context = await BatchContextReader(connection, KEYS).read()
    assert context.lease_holder is None and context.seen == []
