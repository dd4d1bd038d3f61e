"""Prometheus metrics of a writer (``--metrics-port``), served over HTTP from a thread.

Counters and histograms are fed as batches are acknowledged; queue depth, pending entries and
the oldest pending entry's age are read from Redis when scraped, so they are never stale. Each
writer has a registry of its own, so several writers can run in one process.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import redis
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from lancequeue.common.keys import GROUP, TableKeys
from lancequeue.common.status import read_status

_BATCH_ROWS_BUCKETS = (1, 8, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_COUNTED = {
    "rows": "records_written",
    "rejected": "records_rejected",
    "failed": "records_failed",
    "expired": "records_expired",
    "duplicates": "duplicates_dropped",
    "recovered": "records_recovered",
    "batches": "batches",
}


class WriterMetrics:
    """The metrics of one writer's table, and the HTTP server that serves them."""

    def __init__(self, table: str, redis_url: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        labels = {"table": table}
        self._counters = {
            name: Counter(
                f"lancequeue_{metric}",
                f"{metric.replace('_', ' ').capitalize()} by this writer.",
                ["table"],
                registry=self.registry,
            ).labels(**labels)
            for name, metric in _COUNTED.items()
        }
        self._batch_rows = Histogram(
            "lancequeue_batch_rows",
            "Rows committed per batch.",
            ["table"],
            buckets=_BATCH_ROWS_BUCKETS,
            registry=self.registry,
        ).labels(**labels)
        self._flush_seconds = Histogram(
            "lancequeue_flush_seconds",
            "Time a batch took to write its data files and commit.",
            ["table"],
            buckets=_SECONDS_BUCKETS,
            registry=self.registry,
        ).labels(**labels)
        self._ack_seconds = Histogram(
            "lancequeue_ack_latency_seconds",
            "From a record's arrival in the stream to its answer.",
            ["table"],
            buckets=_SECONDS_BUCKETS,
            registry=self.registry,
        ).labels(**labels)
        self._lease = Gauge(
            "lancequeue_lease_held",
            "1 while this writer holds the table's lease and serves it.",
            ["table"],
            registry=self.registry,
        ).labels(**labels)
        self._queue = _QueueCollector(table, redis_url)
        self.registry.register(self._queue)
        self._server: Any = None

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        """Serve ``/metrics`` on ``addr:port`` from a daemon thread."""
        self._server, _ = start_http_server(port, addr, registry=self.registry)

    def close(self) -> None:
        """Stop serving (idempotent)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self._queue.close()

    def lease_held(self, held: bool) -> None:
        self._lease.set(1 if held else 0)

    def acknowledged(
        self, increments: Mapping[str, int], arrived_ms: Iterable[int], now_ms: float
    ) -> None:
        """Count one acknowledgement: its increments, and each answered entry's latency from
        its arrival (``arrived_ms``, Redis time) to now (``now_ms``, Redis time)."""
        for name, value in increments.items():
            counter = self._counters.get(name)
            if counter is not None and value:
                counter.inc(value)
        if increments.get("batches"):
            self._batch_rows.observe(increments.get("rows", 0))
            self._flush_seconds.observe(increments.get("append_ms", 0) / 1000)
        for arrived in arrived_ms:
            self._ack_seconds.observe(max(0.0, (now_ms - arrived) / 1000))


class _QueueCollector(Collector):
    """Queue depth, pending entries and the oldest pending entry's age, read when scraped."""

    def __init__(self, table: str, redis_url: str) -> None:
        self._table = table
        self._keys = TableKeys(table)
        self._client = redis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=5)

    def close(self) -> None:
        self._client.close()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            status = read_status(self._client, self._table)
            oldest_age_s = self._oldest_pending_age_s()
        except (redis.RedisError, OSError):
            return  # Redis unreachable: the scrape shows the counters alone
        for name, help_text, value in (
            ("lancequeue_queue_depth", "Records waiting in the stream.", status["queue_depth"]),
            ("lancequeue_pending", "Entries read and not yet acknowledged.", status["pending"]),
            (
                "lancequeue_oldest_pending_age_seconds",
                "Age of the oldest entry read and not yet acknowledged (0: none).",
                oldest_age_s,
            ),
        ):
            family = GaugeMetricFamily(name, help_text, labels=["table"])
            family.add_metric([self._table], float(value))
            yield family

    def _oldest_pending_age_s(self) -> float:
        try:
            summary: Any = self._client.xpending(self._keys.stream, GROUP)
        except redis.ResponseError:  # no group yet
            return 0.0
        oldest = summary.get("min")
        if not summary.get("pending") or not oldest:
            return 0.0
        seconds, micros = self._client.time()
        oldest_id = oldest.decode() if isinstance(oldest, bytes) else str(oldest)
        return max(0.0, seconds + micros / 1e6 - int(oldest_id.split("-")[0]) / 1000)


def entry_arrivals_ms(entry_ids: Iterable[bytes]) -> list[int]:
    """When each stream entry arrived, in Redis milliseconds (the time part of its id)."""
    return [int(entry_id.split(b"-", 1)[0]) for entry_id in entry_ids]
