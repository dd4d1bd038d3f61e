"""Redis at ``maxmemory`` (``noeviction``) with records waiting. The writer
must keep serving, free the stream's memory even at the cap (acks and deletes are what make
room), and answer the records it committed truthfully."""

from __future__ import annotations

import asyncio
import concurrent.futures
import signal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import redis

from lancequeue.common.entries import record_count
from lancequeue.producer import Producer
from lancequeue.writer import Writer
from tests.faults.rig import FaultRig, MakeRig
from tests.redis_server import RestartableRedis
from tests.support import KEYS, queued_entries, table_ids, wait_for

pytestmark = pytest.mark.faults

HEADROOM_BYTES = 256 * 1024
"""Room left in Redis when the writer stalls: the producers fill it in a few seconds. Then the
cap is set half of it below what Redis holds."""
LEASE = ("--lease-ms", "20000")
"""Longer than the stall, so the writer resumes holding its lease."""
RATE = 200.0


def _memory(rig: FaultRig) -> dict[str, Any]:
    info: dict[str, Any] = rig.client.info("memory")
    return info


def _full(rig: FaultRig) -> bool:
    info = _memory(rig)
    return int(info["used_memory"]) >= int(info["maxmemory"])


def test_a_writer_at_redis_maxmemory_keeps_serving_frees_the_stream_and_answers_truthfully(
    rig_for: MakeRig,
) -> None:
    rig = rig_for("redis at maxmemory")
    writer = rig.start_writer(*LEASE)
    rig.wait_serving(writer)
    rig.start_load(rate=RATE, timeout_s=10, grace_ms=1000, close_timeout_s=12)
    rig.wait_progress(100, "before Redis fills up")
    # The writer stalls while the producers fill Redis to the cap; then the cap is lowered
    # below what Redis holds (by less than the stream holds), so Redis stays over it, refusing
    # whatever would grow it, until the writer frees memory.
    writer.signal(signal.SIGSTOP)
    try:
        rig.client.config_set("maxmemory-policy", "noeviction")
        rig.client.config_set("maxmemory", int(_memory(rig)["used_memory"]) + HEADROOM_BYTES)
        wait_for(lambda: _full(rig), 60, "Redis to reach maxmemory")
        cap = int(_memory(rig)["used_memory"]) - HEADROOM_BYTES // 2
        rig.client.config_set("maxmemory", cap)
    finally:
        writer.signal(signal.SIGCONT)
    rig.rounds = 1
    print(f"maxmemory {cap}; {rig.records_in_stream()} records waiting in the stream")
    served = rig.progressed(200, timeout=20)
    result = rig.conclude(writer, drain_timeout=15)
    used = int(_memory(rig)["used_memory"])
    rig.assert_promises(result)
    assert served, f"no 200 records acknowledged in 20 s from Redis at maxmemory: {result.row()}"
    assert used < cap, f"Redis still uses {used} bytes of {cap} once the stream is drained"


async def test_a_writer_started_against_a_full_redis_takes_the_lease_serves_and_frees_it(
    tmp_path: Path,
) -> None:
    """The writer died and the queue filled Redis to the cap: its restart (or a standby) must
    still take the lease, claim, write, ack and answer, which is what frees the memory."""
    server = RestartableRedis(tmp_path / "redis", persistence=False)
    server.start()
    admin = redis.Redis.from_url(server.url)
    made = Producer("docs", redis_url=server.url)
    writer: Writer | None = None
    try:
        futures = made.enqueue_many([{"id": i, "pad": "x" * 1000} for i in range(200)])
        # The producer's sender pushes them after enqueue_many returned: the cap comes once
        # all of them are waiting in Redis.
        wait_for(lambda: _records_queued(admin) == 200, 30, "the 200 records in Redis")
        assert not any(f.done() for f in futures)
        admin.config_set("maxmemory-policy", "noeviction")
        admin.config_set("maxmemory", int(admin.info("memory")["used_memory"]) - 50_000)
        assert _refused_at_the_cap(admin)
        schema = pa.schema([pa.field("id", pa.int64()), pa.field("pad", pa.string())])
        db_uri = str(tmp_path / "db")
        writer = Writer(table="docs", redis_url=server.url, db_uri=db_uri, schema=schema)
        task = asyncio.create_task(writer.run())
        done, _ = await asyncio.to_thread(concurrent.futures.wait, futures, 60)
        assert len(done) == 200 and all(f.exception() is None for f in futures), (
            f"{len(done)} of 200 answered; lease holder {admin.get(KEYS.lease)!r}"
        )
        assert table_ids(db_uri) == list(range(200))
        assert admin.xlen(KEYS.stream) == 0
        # The writer gave the memory back: the stream's entries are deleted, and Redis trims
        # the buffers of the connections that carried them (in its cron, within seconds).
        wait_for(lambda: not _refused_at_the_cap(admin), 15, "Redis to take writes again")
    finally:
        if writer is not None:
            await writer.stop()
            await task
        await asyncio.to_thread(made.close, 0)
        admin.close()
        server.stop()


def _records_queued(admin: redis.Redis) -> int:
    """Records waiting for the table in Redis (a packed entry counts its records)."""
    return sum(record_count(fields) for fields in queued_entries(admin))


def _refused_at_the_cap(admin: redis.Redis) -> bool:
    """Whether Redis refuses a write that needs memory (``OOM``)."""
    try:
        admin.set("lancequeue-test-probe", "x" * 10_000)
    except redis.exceptions.OutOfMemoryError:
        return True
    admin.delete("lancequeue-test-probe")
    return False
