"""Baseline (c), the limit: one process appending Arrow data built before the clock starts, in
batches of ``max_batch`` rows, with LanceDB ``table.add(batch)``: what appends alone cost.

The drain mode also runs it with the records as they are, dicts (``as_dicts``): what a user's own
``table.add(rows)`` of the same batches costs, LanceDB's conversion included."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lancedb

from lancequeue.bench.arrow_records import bench_schema, records_to_arrow
from lancequeue.bench.settings import TABLE


def run_limit(
    records: list[dict[str, Any]], db_dir: Path, dim: int, max_batch: int, as_dicts: bool = False
) -> dict[str, Any]:
    """Append ``records`` in batches of ``max_batch`` (Arrow, or the dicts themselves); the
    clocked seconds and each append's duration (an append's commit time, not a record's ack
    latency)."""
    table = lancedb.connect(str(db_dir)).create_table(TABLE, schema=bench_schema(dim))
    batches: list[Any]
    if as_dicts:
        batches = [
            records[start : start + max_batch] for start in range(0, len(records), max_batch)
        ]
    else:
        data = records_to_arrow(records, dim)
        batches = [data.slice(start, max_batch) for start in range(0, data.num_rows, max_batch)]
    append_s: list[float] = []
    started = time.perf_counter()
    for batch in batches:
        before = time.perf_counter()
        table.add(batch)
        append_s.append(time.perf_counter() - before)
    return {"seconds": time.perf_counter() - started, "append_s": append_s, "batches": len(batches)}
