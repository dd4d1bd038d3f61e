"""System (d), lancequeue end to end: Redis, the writer through its CLI, K producer processes.

The clock starts when the producers are released from the start barrier (start-up, imports
and record generation are not timed) and stops when the last future resolves. The writer's
RSS and CPU are sampled, Redis's CPU is read from ``INFO``, the producers report their own;
at the end the table must hold exactly the records sent, each once.
"""

from __future__ import annotations

import os
import signal
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import redis

from lancequeue.bench.baselines import BYTES_PER_MB
from lancequeue.bench.latency import latency_summary_ms
from lancequeue.bench.processes import Children, Process, cpu_s, maxrss_bytes, stop_process
from lancequeue.bench.producer_processes import collect, release, start_producers, wait_ready
from lancequeue.bench.redis_server import redis_cpu_s, redis_version, start_redis
from lancequeue.bench.sampling import ProcessTreeSampler
from lancequeue.bench.settings import TABLE, BenchSettings
from lancequeue.bench.table_stats import check_ids, table_stats
from lancequeue.bench.writer_process import (
    delete_table_keys,
    start_writer,
    wait_writer_ready,
    writer_counters,
)
from lancequeue.common.redis_url import parse_redis_url


def _merge_errors(results: list[dict[str, Any]]) -> dict[str, int]:
    errors: dict[str, int] = {}
    for result in results:
        for name, count in result["errors"].items():
            errors[name] = errors.get(name, 0) + count
    return errors


def _measure(
    settings: BenchSettings,
    records: int,
    work: Path,
    redis_url: str,
    table: str,
    children: Children,
    redis_sampler: ProcessTreeSampler | None,
) -> dict[str, Any]:
    """Start the writer and the producers, run, stop the writer; the raw figures."""
    interval_s = settings.sample_ms / 1000
    writer_log = work / "writer.log"
    with _client(redis_url) as client:
        writer = children.add(
            start_writer(
                redis_url,
                work / "db",
                table,
                settings.max_batch,
                settings.coalesce_ms,
                settings.writer_flags,
                writer_log,
            )
        )
        writer_sampler = ProcessTreeSampler(writer.pid, interval_s)
        try:
            wait_writer_ready(writer, client, table, writer_log)
            idle_rss_bytes = writer_sampler.peak_rss_bytes
            producers = start_producers(settings, redis_url, table, records, work, children)
            wait_ready(producers)
            redis_cpu_before = redis_cpu_s(client)
            release(producers)
            results = collect(producers, settings.timeout_s)
            redis_cpu_window_s = redis_cpu_s(client) - redis_cpu_before
            counters = writer_counters(client, table)
            server_version = redis_version(client)
            writer_usage = stop_process(writer, signal.SIGTERM)
        finally:
            writer_sampler.stop()
    return {
        "results": results,
        "started": min(result["started"] for result in results),
        "finished": max(result["last_resolved"] for result in results),
        "writer": writer,
        "writer_usage": writer_usage,
        "writer_sampler": writer_sampler,
        "writer_idle_rss_bytes": idle_rss_bytes,
        "redis_cpu_window_s": redis_cpu_window_s,
        "redis_peak_rss_bytes": redis_sampler.peak_rss_bytes if redis_sampler else None,
        "counters": counters,
        "redis_version": server_version,
    }


def run_end_to_end(settings: BenchSettings, records: int, work: Path) -> dict[str, Any]:
    """Run lancequeue end to end for ``records`` records; its figures, the table's state and
    the check of its ids (``check.ok``)."""
    work.mkdir(parents=True, exist_ok=True)
    # On a Redis the benchmark does not own, a table name no one else uses.
    table = TABLE if settings.redis_url is None else f"{TABLE}_{uuid.uuid4().hex[:12]}"
    redis_sampler: ProcessTreeSampler | None = None
    try:
        with Children() as children:
            if settings.redis_url is None:
                redis_process, redis_url = start_redis(work)
                children.add(redis_process)
                redis_sampler = ProcessTreeSampler(redis_process.pid, settings.sample_ms / 1000)
            else:
                redis_url = settings.redis_url
            try:
                raw = _measure(settings, records, work, redis_url, table, children, redis_sampler)
            finally:
                if redis_sampler is not None:
                    redis_sampler.stop()
    finally:
        if settings.redis_url is not None and not settings.keep:
            with _client(settings.redis_url) as client:
                delete_table_keys(client, table)  # once the writer and producers are gone
    return _figures(settings, records, work, table, raw)


def _client(url: str) -> redis.Redis:
    """A client of the single server at ``url``, its password taken apart as lancequeue does."""
    parsed = parse_redis_url(url)
    return redis.Redis.from_url(parsed.address, **parsed.credentials())


def _figures(
    settings: BenchSettings, records: int, work: Path, table: str, raw: dict[str, Any]
) -> dict[str, Any]:
    results: list[dict[str, Any]] = raw["results"]
    seconds = raw["finished"] - raw["started"]
    latencies_ms = np.concatenate([result["latencies_ms"] for result in results])
    encoded_bytes = sum(result["encoded_bytes"] for result in results)
    counters = raw["counters"]
    writer: Process = raw["writer"]
    sampler: ProcessTreeSampler = raw["writer_sampler"]
    return {
        "system": "lancequeue",
        "table": table,
        "records": records,
        "producers": settings.producers,
        "rate": settings.rate,
        "coalesce_ms": settings.coalesce_ms,
        "seconds": seconds,
        "rows_per_s": records / seconds,
        "mb_per_s": encoded_bytes / seconds / BYTES_PER_MB,
        "encoded_bytes": encoded_bytes,
        "enqueue_seconds": max(result["enqueued"] for result in results) - raw["started"],
        "latency": latency_summary_ms(latencies_ms / 1000),
        "max_behind_schedule_ms": max(result["max_behind_schedule_ms"] for result in results),
        "written_ok": sum(result["ok"] for result in results),
        "errors": _merge_errors(results),
        "unanswered": sum(result["unanswered"] for result in results),
        "batches": counters["batches"],
        "rows_by_writer": counters["rows"],
        "mean_batch_rows": counters["rows"] / counters["batches"] if counters["batches"] else None,
        "mean_append_ms": counters["append_ms"] / counters["batches"]
        if counters["batches"]
        else None,
        "peak_rss_bytes": sampler.peak_rss_bytes,
        "maxrss_bytes": maxrss_bytes(raw["writer_usage"], raw["writer_sampler"].hwm_bytes),
        "writer_idle_rss_bytes": raw["writer_idle_rss_bytes"],
        "writer_rss_samples": sampler.samples,
        "redis_peak_rss_bytes": raw["redis_peak_rss_bytes"],
        "producer_peak_rss_bytes": max(result["peak_rss_bytes"] for result in results),
        "cpu_s_window": {
            "writer": sampler.cpu_between(raw["started"], raw["finished"]),
            "redis": raw["redis_cpu_window_s"],
            "producers": sum(result["cpu_s_window"] for result in results),
            "available": seconds * (os.cpu_count() or 1),
        },
        "writer_cpu_s_total": cpu_s(raw["writer_usage"]),
        "writer_exit_code": writer.returncode,
        "redis_version": raw["redis_version"],
        **table_stats(work / "db", table),
        "check": check_ids(work / "db", table, records),
    }
