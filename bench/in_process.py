"""Baseline (b): one process, many concurrent callers writing through an in-process coalescing
queue (:class:`CoalescingQueue`) in front of a LanceDB ``AsyncTable``."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import lancedb
import numpy as np

from lancequeue.bench.arrow_records import bench_schema, records_to_arrow
from lancequeue.bench.coalescing_queue import CoalescingQueue
from lancequeue.bench.settings import TABLE


async def _run(
    records: list[dict[str, Any]],
    db_dir: Path,
    dim: int,
    max_batch: int,
    coalesce_ms: int,
    callers: int,
    max_queue_size: int,
) -> dict[str, Any]:
    db = await lancedb.connect_async(str(db_dir))
    table = await db.create_table(TABLE, schema=bench_schema(dim))
    queue = CoalescingQueue(
        table, lambda batch: records_to_arrow(batch, dim), max_batch, coalesce_ms, max_queue_size
    )
    queue.start()
    latencies_s = np.zeros(len(records))
    next_record = iter(range(len(records)))  # shared: each caller takes the next record

    async def caller() -> None:
        for position in next_record:
            before = time.perf_counter()
            written = await queue.enqueue(records[position])
            await written  # the record is in the table
            latencies_s[position] = time.perf_counter() - before

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    seconds = time.perf_counter() - started
    await queue.stop()
    return {"seconds": seconds, "latencies_s": latencies_s.tolist(), "batches": queue.batches}


def run_in_process(
    records: list[dict[str, Any]],
    db_dir: Path,
    dim: int,
    max_batch: int,
    coalesce_ms: int,
    callers: int,
    max_queue_size: int,
) -> dict[str, Any]:
    """Write ``records`` from ``callers`` concurrent tasks, each awaiting its record's future;
    the clocked seconds, each record's ack latency and the number of appends."""
    return asyncio.run(_run(records, db_dir, dim, max_batch, coalesce_ms, callers, max_queue_size))
