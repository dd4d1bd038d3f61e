"""``--metrics-port``: the writer serves Prometheus metrics of its table, on this machine only
unless ``--metrics-host`` says otherwise."""

from __future__ import annotations

import asyncio
import ipaddress
import signal
import socket
import urllib.request
from collections.abc import Callable

import psutil
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from lancequeue.common.errors import RecordRejected
from lancequeue.producer import Producer
from tests.support import (
    StartWriter,
    WriterProcess,
    async_wait_for,
    free_port,
    gather,
    record,
    wait_for,
    writer_alive,
    writer_serving,
)


def _scrape(port: int, table: str | None = "docs") -> dict[str, float]:
    """Every sample of ``/metrics`` for ``table`` (None: those without a table), by name."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.labels.get("table") == table and "le" not in sample.labels
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
    # The writer counts a flush once its answers are sent: a producer may hear first.
    metrics = await async_wait_for(
        lambda: _scraped_when(port, "lancequeue_ack_latency_seconds_count", 51),
        30,
        "every answer counted",
    )
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
    assert not [name for name in metrics if name.endswith("_created")]
    process = await asyncio.to_thread(_scrape, port, None)  # the usual process_* series
    assert process["process_resident_memory_bytes"] > 0 and process["process_open_fds"] > 0
    assert "process_cpu_seconds_total" in process and "python_info" in process


async def _scraped_when(port: int, name: str, value: float) -> dict[str, float] | None:
    """The scrape, once its ``name`` sample is ``value`` (else None)."""
    metrics = await asyncio.to_thread(_scrape, port)
    return metrics if metrics.get(name) == value else None


def _other_address() -> str:
    """An IPv4 address of this machine other than a loopback one (skips if it has none)."""
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if (
                address.family == socket.AF_INET
                and not ipaddress.ip_address(address.address).is_loopback
            ):
                return str(address.address)
    pytest.skip("this machine has no IPv4 address but loopback ones")


def _accepts(host: str, port: int) -> bool:
    """Whether a TCP connection to ``host:port`` is accepted (False if refused)."""
    try:
        with socket.create_connection((host, port), timeout=10):
            return True
    except OSError:
        return False


async def test_by_default_the_metrics_are_served_on_loopback_only(
    start_writer: StartWriter, client: redis.Redis
) -> None:
    other = _other_address()
    port = free_port()
    start_writer(metrics_port=port)
    await writer_serving(client)
    assert await asyncio.to_thread(_accepts, "127.0.0.1", port)
    assert not await asyncio.to_thread(_accepts, other, port), f"metrics served on {other}"


def test_metrics_host_0_0_0_0_serves_them_on_every_interface(
    writer_process: Callable[..., WriterProcess], client: redis.Redis
) -> None:
    other = _other_address()
    port = free_port()
    writer = writer_process("--metrics-port", str(port), "--metrics-host", "0.0.0.0")
    wait_for(lambda: writer_alive(client) or writer.process.poll() is not None, 60, "the writer")
    assert writer.process.poll() is None, writer.log()
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no HTTP proxy
    with direct.open(f"http://{other}:{port}/metrics", timeout=10) as response:
        assert "lancequeue_lease_held" in response.read().decode()
    assert _accepts("127.0.0.1", port)
    writer.signal(signal.SIGTERM)
    assert writer.wait() == 0, writer.log()
