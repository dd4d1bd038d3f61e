"""Baseline (a): one process, one LanceDB ``table.add([row])`` per record (one commit, hence
one table version and one fragment, per record)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lancedb

from lancequeue.bench.arrow_records import bench_schema
from lancequeue.bench.settings import TABLE


def run_naive(records: list[dict[str, Any]], db_dir: Path, dim: int) -> dict[str, Any]:
    """Append ``records`` one at a time; the clocked seconds and each append's duration."""
    table = lancedb.connect(str(db_dir)).create_table(TABLE, schema=bench_schema(dim))
    latencies_s: list[float] = []
    started = time.perf_counter()
    for record in records:
        before = time.perf_counter()
        table.add([record])
        latencies_s.append(time.perf_counter() - before)
    return {
        "seconds": time.perf_counter() - started,
        "latencies_s": latencies_s,
        "batches": len(records),
    }
