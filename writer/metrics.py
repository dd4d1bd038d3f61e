"""Prometheus metrics of a writer (``--metrics-port``, on ``--metrics-host``), served over HTTP
from a thread.

Counters and histograms are fed as batches are acknowledged; queue depth, pending entries and
the oldest pending entry's age are read from Redis when scraped, so they are never stale. The
writers of one process (one per table) share one registry and one server; every series has a
``table`` label.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import redis
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from lancequeue.common.errors import ConfigError
from lancequeue.common.keys import GROUP, TableKeys
from lancequeue.common.redis_client import REDIS_FAILURES, SyncRedis, sync_client
from lancequeue.common.status import read_status
from lancequeue.common.stream_ids import id_ms

_SCRAPE_FAILURES: tuple[type[Exception], ...] = (*REDIS_FAILURES, ConfigError)
_BATCH_ROWS_BUCKETS = (1, 8, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_COUNTED = {
    "rows": "records_written",
    "rejected": "records_rejected",
    "failed": "records_failed",
    "expired": "records_expired",
    "duplicates": "duplicates_dropped",
    "recovered": "records_recovered",
    "deleted": "rows_deleted",
    "batches": "batches",
}


class WriterMetrics:
    """The metrics of one process's writers (one table or several, told apart by the ``table``
    label), and the HTTP server that serves them."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._counters = {
            name: Counter(
                f"lancequeue_{metric}",
                f"{metric.replace('_', ' ').capitalize()} by this writer.",
                ["table"],
                registry=self.registry,
            )
            for name, metric in _COUNTED.items()
        }
        self._batch_rows = Histogram(
            "lancequeue_batch_rows",
            "Rows committed per batch.",
            ["table"],
            buckets=_BATCH_ROWS_BUCKETS,
            registry=self.registry,
        )
        self._flush_seconds = Histogram(
            "lancequeue_flush_seconds",
            "Time a batch took to write its data files and commit.",
            ["table"],
            buckets=_SECONDS_BUCKETS,
            registry=self.registry,
        )
        self._ack_seconds = Histogram(
            "lancequeue_ack_latency_seconds",
            "From a record's push into Redis to its answer.",
            ["table"],
            buckets=_SECONDS_BUCKETS,
            registry=self.registry,
        )
        self._lease = Gauge(
            "lancequeue_lease_held",
            "1 while this writer holds the table's lease and serves it.",
            ["table"],
            registry=self.registry,
        )
        self._queues = _QueueCollector()
        self.registry.register(self._queues)
        # The process's memory, CPU and open files (process_*, python_info): the usual series.
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.served = CollectorRegistry()
        """What ``/metrics`` shows: the registry without its ``_created`` series."""
        self.served.register(_WithoutCreated(self.registry))
        self._server: Any = None

    def table(self, table: str, redis_url: str, cluster: bool) -> TableMetrics:
        """The metrics of one table's writer; its queue gauges are read from ``redis_url`` (a
        Redis Cluster if ``cluster``)."""
        self._queues.add(table, redis_url, cluster)
        return TableMetrics(
            {name: counter.labels(table=table) for name, counter in self._counters.items()},
            self._batch_rows.labels(table=table),
            self._flush_seconds.labels(table=table),
            self._ack_seconds.labels(table=table),
            self._lease.labels(table=table),
        )

    def serve(self, host: str, port: int) -> None:
        """Serve ``/metrics`` on ``host:port`` from a daemon thread (``host`` 127.0.0.1: this
        machine only; 0.0.0.0: every interface). Raises ``ConfigError`` if that address
        cannot be served (not this machine's, or the port is taken)."""
        try:
            self._server, _ = start_http_server(port, host, registry=self.served)
        except OSError as exc:
            raise ConfigError(f"cannot serve metrics on {host}:{port}: {exc}") from exc

    def close(self) -> None:
        """Stop serving (idempotent)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self._queues.close()


class TableMetrics:
    """What one table's writer feeds: counts as batches are acknowledged, and its lease."""

    def __init__(
        self,
        counters: Mapping[str, Any],
        batch_rows: Any,
        flush_seconds: Any,
        ack_seconds: Any,
        lease: Any,
    ) -> None:
        self._counters = counters
        self._batch_rows = batch_rows
        self._flush_seconds = flush_seconds
        self._ack_seconds = ack_seconds
        self._lease = lease

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


class _WithoutCreated(Collector):
    """The metrics of ``registry`` without the ``_created`` sample of each counter and
    histogram (when it was made: noise to every dashboard), for this registry alone."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        for family in self._registry.collect():
            family.samples = [s for s in family.samples if not s.name.endswith("_created")]
            yield family


class _QueueCollector(Collector):
    """Queue depth, pending entries and the oldest pending entry's age of each table, read
    from Redis when scraped."""

    def __init__(self) -> None:
        self._redis_urls: dict[str, tuple[str, bool]] = {}
        self._clients: dict[str, SyncRedis] = {}
        self._clients_lock = threading.Lock()  # scrapes may run in several threads

    def add(self, table: str, redis_url: str, cluster: bool) -> None:
        self._redis_urls[table] = (redis_url, cluster)

    def _client(self, table: str) -> SyncRedis:
        """The table's client, made at the first scrape (a cluster client connects as it is
        made, which must not hold up the writer's start)."""
        with self._clients_lock:
            if table not in self._clients:
                url, cluster = self._redis_urls[table]
                self._clients[table] = sync_client(
                    url, cluster, socket_timeout=5, socket_connect_timeout=5
                )
            return self._clients[table]

    def close(self) -> None:
        for client in self._clients.values():
            client.close()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        families = [
            GaugeMetricFamily(name, help_text, labels=["table"])
            for name, help_text in (
                ("lancequeue_queue_depth", "Records waiting in Redis (inbox and stream)."),
                ("lancequeue_pending", "Entries read and not yet acknowledged."),
                (
                    "lancequeue_oldest_pending_age_seconds",
                    "Age of the oldest entry read and not yet acknowledged (0: none).",
                ),
            )
        ]
        indexes = [
            GaugeMetricFamily(name, help_text, labels=["table", "index"])
            for name, help_text in (
                ("lancequeue_index_indexed_rows", "Rows an index covers (its newest upkeep's)."),
                (
                    "lancequeue_index_unindexed_rows",
                    "Rows an index does not cover yet, that queries scan by brute force.",
                ),
            )
        ]
        for table in list(self._redis_urls):
            try:
                client = self._client(table)
                status = read_status(client, table)
                oldest_age_s = _oldest_pending_age_s(client, TableKeys(table))
            except _SCRAPE_FAILURES:
                continue  # Redis unreachable: the scrape shows the counters alone
            values = (status["queue_depth"], status["pending"], oldest_age_s)
            for family, value in zip(families, values, strict=True):
                family.add_metric([table], float(value))
            for index in status["indexes"]:
                for family, field in zip(indexes, ("indexed_rows", "unindexed_rows"), strict=True):
                    family.add_metric([table, str(index.get("name"))], float(index.get(field, 0)))
        yield from families
        yield from indexes


def _oldest_pending_age_s(client: SyncRedis, keys: TableKeys) -> float:
    try:
        summary: Any = client.xpending(keys.stream, GROUP)
    except redis.ResponseError:  # no group yet
        return 0.0
    oldest = summary.get("min")
    if not summary.get("pending") or not oldest:
        return 0.0
    seconds, micros = client.time()
    return max(0.0, seconds + micros / 1e6 - id_ms(oldest) / 1000)
