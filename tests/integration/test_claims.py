"""The writer's claim before each batch against a producer's abandonment: exactly one of the two
wins for each record, atomically, in a real Redis."""

from __future__ import annotations

import pytest
import redis
import redis.asyncio as aioredis

from lancequeue.common.errors import WriterReplaced
from lancequeue.common.keys import TableKeys
from lancequeue.common.protocol import ABANDON_SCRIPT, ABANDONED_TTL_MS, SEQ_JUMP_LIMIT
from lancequeue.common.script_calls import ScriptCalls
from lancequeue.writer.claims import BatchClaim, Claimer

KEYS = TableKeys("docs")
LEASE = "writer-a 7"


def abandon(client: redis.Redis, producer: str, *seqs: int) -> list[int]:
    """What a producer does at a record's deadline: the sequence numbers it abandoned."""
    keys = [KEYS.seen(producer), KEYS.claim(producer), KEYS.abandoned(producer), KEYS.epoch]
    abandoned = client.eval(ABANDON_SCRIPT, 4, *keys, "", *seqs)
    return [int(seq) for seq in abandoned]  # type: ignore[union-attr]


async def claim(redis_url: str, ranges: dict[str, list[tuple[int, int]]]) -> BatchClaim:
    async with aioredis.Redis.from_url(redis_url) as connection:
        calls = ScriptCalls(connection)
        try:
            return await Claimer(calls, KEYS, LEASE, 4000).claim(ranges)
        finally:
            await calls.aclose()


async def test_a_record_abandoned_first_is_reported_to_the_writer_and_one_claimed_first_cannot_be_abandoned(  # noqa: E501
    redis_url: str, client: redis.Redis
) -> None:
    client.set(KEYS.lease, LEASE)
    assert abandon(client, "p", 5) == [5]
    assert client.pttl(KEYS.abandoned("p")) == -1  # a producer cannot shorten its life
    claimed = await claim(redis_url, {"p": [(4, 6)]})
    assert claimed.producers["p"].abandoned == {5}
    # The writer gives it its expiry, longer than any commit.
    assert ABANDONED_TTL_MS - 60_000 < client.pttl(KEYS.abandoned("p")) <= ABANDONED_TTL_MS
    # The writer claimed up to 6: abandoning 6 (or anything below) is too late now.
    assert abandon(client, "p", 6, 4) == []
    assert abandon(client, "p", 7) == [7]


async def test_a_writer_that_lost_the_lease_claims_nothing(
    redis_url: str, client: redis.Redis
) -> None:
    client.set(KEYS.lease, "writer-b 8")
    with pytest.raises(WriterReplaced, match="writer-b"):
        await claim(redis_url, {"p": [(1, 3)]})
    assert client.get(KEYS.claim("p")) is None
    assert abandon(client, "p", 2) == [2]


async def test_a_sequence_number_far_ahead_of_a_producers_settled_one_is_refused_and_not_claimed(
    redis_url: str, client: redis.Redis
) -> None:
    client.set(KEYS.lease, LEASE)
    client.set(KEYS.seen("p"), 10)
    far = 12 + SEQ_JUMP_LIMIT + 1  # past what the range before it reached
    claimed = await claim(redis_url, {"p": [(11, 12), (far, far), (13, 13)]})
    assert claimed.producers["p"].refused == {1}
    assert client.get(KEYS.claim("p")) == b"13"


async def test_a_batch_from_ten_thousand_producers_reads_every_settled_sequence(
    redis_url: str, client: redis.Redis
) -> None:
    producers = [f"p{i}" for i in range(10_000)]
    client.mset({KEYS.seen(pid): i for i, pid in enumerate(producers) if i % 2 == 0})
    client.set(KEYS.lease, LEASE)
    claimed = await claim(redis_url, {pid: [(i + 1, i + 1)] for i, pid in enumerate(producers)})
    seen = claimed.producers
    assert [seen[pid].seen for pid in producers] == [i if i % 2 == 0 else -1 for i in range(10_000)]
    redis_seconds, _ = client.time()
    assert abs(claimed.now_ms / 1000 - redis_seconds) < 5


async def test_abandoning_after_redis_lost_its_data_abandons_nothing_and_says_so(
    client: redis.Redis,
) -> None:
    client.set(KEYS.epoch, "after-the-loss")
    keys = [KEYS.seen("p"), KEYS.claim("p"), KEYS.abandoned("p"), KEYS.epoch]
    sent_under = "before-the-loss"
    assert client.eval(ABANDON_SCRIPT, 4, *keys, sent_under, 5) == -1
    assert not client.exists(KEYS.abandoned("p"))
