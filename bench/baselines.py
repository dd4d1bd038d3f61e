"""The baselines (a) naive, (b) in-process coalescing and (c) the limit, each run in a child
process of its own (``baseline_child``) whose memory and CPU are sampled from here."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from lancequeue.bench.errors import BenchError
from lancequeue.bench.processes import (
    Children,
    cpu_s,
    maxrss_bytes,
    reap,
    start_process,
    tail,
)
from lancequeue.bench.sampling import ProcessTreeSampler
from lancequeue.bench.settings import TABLE, BenchSettings
from lancequeue.bench.table_stats import table_stats

CHILD_MODULE = "lancequeue.bench.baseline_child"
"""The module each baseline process runs."""
BYTES_PER_MB = 1_000_000
"""MB in throughput figures (MB/s of encoded records)."""


def baseline_records(system: str, settings: BenchSettings) -> int:
    """How many records ``system`` writes: all of them, but at most ``naive_records`` for (a)."""
    return min(settings.naive_records, settings.records) if system == "naive" else settings.records


def run_baseline(system: str, settings: BenchSettings, work: Path) -> dict[str, Any]:
    """Run baseline ``system`` in a child process; its figures and what its table holds."""
    count = baseline_records(system, settings)
    work.mkdir(parents=True, exist_ok=True)
    db_dir, result_path, log = work / "db", work / "result.json", work / "baseline.log"
    command = [sys.executable, "-m", CHILD_MODULE, system, "--db", str(db_dir)]
    command += ["--count", str(count), "--dim", str(settings.dim)]
    command += ["--text-bytes", str(settings.text_bytes), "--seed", str(settings.seed)]
    command += ["--max-batch", str(settings.max_batch), "--coalesce-ms", str(settings.coalesce_ms)]
    command += ["--callers", str(settings.callers)]
    command += ["--max-queue-size", str(settings.max_queue_size), "--result", str(result_path)]
    with Children() as children:
        process = children.add(start_process(command, log))
        sampler = ProcessTreeSampler(process.pid, settings.sample_ms / 1000)
        try:
            usage = reap(process, settings.timeout_s)
        finally:
            sampler.stop()
        if process.returncode is None:
            raise BenchError(f"baseline {system} took more than {settings.timeout_s}s")
    outcome: dict[str, Any] = (
        json.loads(result_path.read_text()) if result_path.exists() else {"error": "no result"}
    )
    if process.returncode != 0 or "error" in outcome:
        raise BenchError(
            f"baseline {system} failed (exit {process.returncode}): "
            f"{outcome.get('error', '')}\n{tail(log)}"
        )
    seconds = float(outcome["seconds"])
    return {
        "system": system,
        **outcome,
        "rows_per_s": count / seconds,
        "mb_per_s": outcome["encoded_bytes"] / seconds / BYTES_PER_MB,
        "peak_rss_bytes": sampler.peak_rss_bytes,
        "maxrss_bytes": maxrss_bytes(usage, sampler.hwm_bytes),
        "cpu_s_total": cpu_s(usage),
        **table_stats(db_dir, TABLE),
    }
