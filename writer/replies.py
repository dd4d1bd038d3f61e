"""After a flush: ack and trim the batch's entries, answer every reply key, publish the flush.

All of it goes to Redis in one MULTI, so a batch is never acked without being answered. Only
keys of the table's own namespace are written: reply keys were checked when the entries were
read.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict

import redis.asyncio as aioredis

from lancequeue.common.keys import GROUP, TableKeys
from lancequeue.common.protocol import encode_results
from lancequeue.writer.entries import Entry

logger = logging.getLogger(__name__)

Outcome = dict[str, str] | None
"""A record's result on the wire: None when it is in the table, else an error map."""


async def ack_and_answer(
    redis: aioredis.Redis,
    keys: TableKeys,
    entries: list[Entry],
    outcomes: dict[bytes, Outcome],
    reply_ttl_ms: int,
    increments: dict[str, int],
    values: dict[str, int | str],
) -> None:
    """Ack and delete ``entries``, push each reply key its results (``outcomes`` maps entry id to
    its error payload, None for ok; entries without a reply key are only acked), and update the
    writer's status hash with ``increments`` and ``values``."""
    per_reply_key: dict[str, list[tuple[int, Outcome]]] = defaultdict(list)
    for entry in entries:
        if entry.reply_key is not None:
            per_reply_key[entry.reply_key].append((entry.seq, outcomes.get(entry.entry_id)))
    ids = [entry.entry_id for entry in entries]
    async with redis.pipeline(transaction=True) as pipe:
        pipe.xack(keys.stream, GROUP, *ids)
        pipe.xdel(keys.stream, *ids)
        for reply_key, results in per_reply_key.items():
            pipe.rpush(reply_key, encode_results(results))
            pipe.pexpire(reply_key, reply_ttl_ms)
        for name, increment in increments.items():
            pipe.hincrby(keys.writer, name, increment)
        fields: dict[str | bytes, int | str] = {"last_flush_at_ms": int(time.time() * 1000)}
        fields.update(values)
        pipe.hset(keys.writer, mapping=fields)  # type: ignore[arg-type]
        pipe.publish(keys.flushed_channel, len(ids))
        # raise_on_error=False: one command failing (a reply key someone made a string:
        # WRONGTYPE) must not lose the acks and the other answers, which Redis applied.
        results = await pipe.execute(raise_on_error=False)
    for result in results:
        if isinstance(result, Exception):
            logger.warning("after a flush of %d entries: %s", len(ids), result)
