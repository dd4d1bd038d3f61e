"""``--metrics-port``: the writer serves Prometheus metrics of its table."""

from __future__ import annotations

import asyncio
import urllib.request

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from lancequeue.common.errors import RecordRejected
from lancequeue.producer import Producer
from tests.support import StartWriter, free_port, gather, record, writer_serving


def _scrape(port: int) -> dict[str, float]:
    """Every sample of ``/metrics`` for table ``docs``, by sample name."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.labels.get("table") == "docs" and "le" not in sample.labels
    }


async def test_the_writer_serves_counts_latencies_queue_and_lease_of_its_table(
    start_writer: StartWriter, producer: Producer, client: redis.Redis
) -> None:
    port = free_port()
    start_writer(coalesce_ms=20, metrics_port=port)
    await writer_serving(client)
    await gather(producer.enqueue_many([record(i) for i in range(50)]))
    with pytest.raises(RecordRejected):
        await asyncio.wrap_future(producer.enqueue({**record(50), "id": "not a number"}))
    metrics = await asyncio.to_thread(_scrape, port)
    assert metrics["lancequeue_records_written_total"] == 50
    assert metrics["lancequeue_records_rejected_total"] == 1
    assert metrics["lancequeue_records_failed_total"] == 0
    batches = metrics["lancequeue_batches_total"]
    assert batches >= 1
    assert metrics["lancequeue_batch_rows_count"] == batches
    assert metrics["lancequeue_batch_rows_sum"] == 50
    assert metrics["lancequeue_flush_seconds_count"] == batches
    assert metrics["lancequeue_ack_latency_seconds_count"] == 51  # every record answered
    assert metrics["lancequeue_lease_held"] == 1
    assert metrics["lancequeue_queue_depth"] == 0 and metrics["lancequeue_pending"] == 0
    assert metrics["lancequeue_oldest_pending_age_seconds"] == 0
