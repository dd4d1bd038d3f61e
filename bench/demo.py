"""``lancequeue demo``: the whole write path on this machine in one command.

Redis (the embedded server of the data directory unless ``--redis`` is given), the writer
through its CLI, and K producer processes writing N records each (a text and a 384-dim float32
vector), with a live progress bar; then a summary and a vector search of the table it wrote.
The table (``demo``) stays in the data directory; a new demo replaces it.
"""

from __future__ import annotations

import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lancedb
import numpy as np
import redis

from lancequeue.bench.latency import latency_summary_ms
from lancequeue.bench.processes import (
    Children,
    maxrss_bytes,
    stop_process,
    vm_hwm_bytes,
)
from lancequeue.bench.producer_processes import (
    ProducerProcess,
    collect,
    release,
    start_producers,
    wait_ready,
)
from lancequeue.bench.records import DEFAULT_SEED, DEFAULT_TEXT_BYTES, make_records
from lancequeue.bench.settings import BenchSettings
from lancequeue.bench.table_stats import table_stats
from lancequeue.bench.writer_process import (
    delete_table_keys,
    start_writer,
    wait_writer_ready,
    writer_counters,
)
from lancequeue.common import embedded_redis
from lancequeue.common.connection import (
    resolve_redis_url,
)

TABLE = "demo"
"""The table the demo writes, in ``<data dir>/demo-db``."""
_PROGRESS_POLL_S = 0.2


Say = Callable[[str], None]
"""Shows one line of what the demo is doing."""
Progress = Callable[[int, int], None]
"""Shows the rows written so far, of the total, while the producers run."""


@dataclass(frozen=True)
class DemoResult:
    summary: str
    """What happened, as lines to print."""
    started_redis: bool
    """Whether the demo started the embedded Redis server (and stopped it again)."""


def run_demo(
    settings: BenchSettings, directory: Path, redis_url: str | None, say: Say, progress: Progress
) -> DemoResult:
    """Run a writer and ``settings.producers`` producer processes on this machine, writing
    ``settings.records`` records to the table ``demo`` in ``directory/demo-db``.

    With no ``redis_url`` the embedded Redis server of ``directory`` is used: started here
    unless it runs, and then stopped again. Raises a ``LancequeueError`` when a process does
    not start or the table is wrong.
    """
    started_here = redis_url is None and not embedded_redis.is_running(directory)
    url = resolve_redis_url(redis_url, directory, start_embedded=True)
    work = Path(tempfile.mkdtemp(prefix="lancequeue-demo-"))
    try:
        summary = _run(settings, url, directory / "demo-db", work, say, progress)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if started_here:
            embedded_redis.stop(directory)
    return DemoResult(_format(summary), started_here)


def _run(
    settings: BenchSettings, url: str, db_dir: Path, work: Path, say: Say, progress: Progress
) -> dict[str, Any]:
    total = settings.records
    shutil.rmtree(db_dir / f"{TABLE}.lance", ignore_errors=True)  # an earlier demo's table
    with redis.Redis.from_url(url) as client, Children() as children:
        delete_table_keys(client, TABLE)  # and its stream
        say(f"Redis: {url}")
        writer_log = work / "writer.log"
        writer = children.add(
            start_writer(
                url, db_dir, TABLE, settings.max_batch, settings.coalesce_ms, (), writer_log
            )
        )
        wait_writer_ready(writer, client, TABLE, writer_log)
        say(f"writer: pid {writer.pid}, table {TABLE!r} in {db_dir}")
        started = start_producers(settings, url, TABLE, total, work, children)
        wait_ready(started)
        say(f"{settings.producers} producers: {total:,} records, dim {settings.dim}")
        release(started)
        _follow(client, started, total, progress)
        results = collect(started, settings.timeout_s)
        counters = writer_counters(client, TABLE)
        writer_hwm = vm_hwm_bytes(writer.pid)
        writer_usage = stop_process(writer, signal.SIGTERM)
    seconds = max(r["last_resolved"] for r in results) - min(r["started"] for r in results)
    latencies_ms = np.concatenate([result["latencies_ms"] for result in results])
    return {
        "records": total,
        "ok": sum(result["ok"] for result in results),
        "not_written": sum(result["count"] - result["ok"] for result in results),
        "seconds": seconds,
        "latency": latency_summary_ms(latencies_ms / 1000),
        "counters": counters,
        "writer_peak_rss_bytes": maxrss_bytes(writer_usage, writer_hwm),
        "table": table_stats(db_dir, TABLE),
        "db_dir": db_dir,
        "search": _search(db_dir, settings),
    }


def _follow(
    client: redis.Redis, producers: list[ProducerProcess], total: int, progress: Progress
) -> None:
    """Shows the rows the writer has committed until every producer is done."""
    while any(producer.process.poll() is None for producer in producers):
        progress(writer_counters(client, TABLE)["rows"], total)
        time.sleep(_PROGRESS_POLL_S)  # a display refresh, not a synchronisation
    progress(writer_counters(client, TABLE)["rows"], total)


def _search(db_dir: Path, settings: BenchSettings) -> list[dict[str, Any]]:
    """The 3 rows nearest the vector of record 0 (regenerated: the producers made it)."""
    query = make_records(0, 1, settings.dim, DEFAULT_TEXT_BYTES, DEFAULT_SEED)[0]
    table = lancedb.connect(str(db_dir)).open_table(TABLE)
    hits = table.search(query["vector"]).limit(3).select(["id", "text", "_distance"]).to_list()
    return [
        {"id": hit["id"], "text": hit["text"], "distance": float(hit["_distance"])} for hit in hits
    ]


def _format(summary: dict[str, Any]) -> str:
    latency = summary["latency"]
    counters = summary["counters"]
    table = summary["table"]
    peak = summary["writer_peak_rss_bytes"]
    mean_batch = counters["rows"] / max(1, counters["batches"])
    rows = [
        ("records written", f"{summary['ok']:,} of {summary['records']:,}"),
        ("rows/s", f"{summary['records'] / summary['seconds']:,.0f}"),
        ("ack latency p50 / p99", f"{latency['p50_ms']:.0f} ms / {latency['p99_ms']:.0f} ms"),
        (
            "batches",
            f"{counters['batches']:,} (mean {mean_batch:.0f} rows)",
        ),
        ("writer peak memory", "-" if peak is None else f"{peak / 2**20:,.0f} MiB"),
        (
            "table rows / version",
            f"{table['table_rows']:,} / {table['table_version']:,} "
            f"({table['versions']:,} versions kept)",
        ),
        ("table", str(summary["db_dir"] / f"{TABLE}.lance")),
    ]
    width = max(len(name) for name, _ in rows)
    lines = ["", *(f"{name:<{width}}  {value}" for name, value in rows), ""]
    lines.append("nearest rows to record 0's vector (a vector search of the table):")
    for hit in summary["search"]:
        lines.append(f"  id {hit['id']:>6}  distance {hit['distance']:.4f}  {hit['text'][:48]!r}")
    if summary["not_written"]:
        lines.append(f"{summary['not_written']:,} records were not written: see the producers")
    return "\n".join(lines)
