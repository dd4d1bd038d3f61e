"""The whole producer→writer path on a real three-node Redis Cluster on loopback: every key of a
table lives in one hash slot, and every process may be pointed at any node."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path

import lancedb
import pytest
import redis

from lancequeue.common.errors import QueueFull
from lancequeue.producer import AsyncProducer, Producer, WriteResult
from tests.redis_cluster import LoopbackCluster
from tests.support import (
    WriterProcess,
    cli_env,
    gather,
    queued_records,
    record,
    run_cli,
    wait_for,
)

DEADLINE_SLACK_S = 1.0
"""How long after its deadline a record held back by a full queue may take to fail."""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackCluster]:
    made = LoopbackCluster(tmp_path_factory.mktemp("cluster"))
    try:
        made.start()
        yield made
    finally:
        made.stop()


def _node_url(port: int, scheme: str = "redis") -> str:
    return f"{scheme}://127.0.0.1:{port}/0"


def _keys_by_node(cluster: LoopbackCluster, table: str) -> dict[int, list[bytes]]:
    found: dict[int, list[bytes]] = {}
    for port in cluster.ports:
        with redis.Redis(port=port) as node:
            keys = sorted(node.scan_iter(match=f"lancequeue:{{{table}}}:*"))
        if keys:
            found[port] = keys
    return found


def _start_writer(
    tmp_path: Path, table: str, redis_url: str, db_uri: str, *args: str
) -> WriterProcess:
    env = cli_env(LANCEQUEUE_REDIS=redis_url, LANCEQUEUE_DB=db_uri, LANCEQUEUE_TABLE=table)
    return WriterProcess(list(args), tmp_path / f"writer-{table}.log", env)


def _writer_checks(table: str, redis_url: str) -> bool:
    checked = run_cli("writer", "--check", "--table", table, "--redis", redis_url)
    return checked.returncode == 0


async def test_producers_and_a_writer_pointed_at_different_nodes_of_a_cluster_write_every_record(
    cluster: LoopbackCluster, tmp_path: Path
) -> None:
    table = "cluster_docs"
    db_uri = str(tmp_path / "db")
    home = cluster.node_of(f"lancequeue:{{{table}}}:stream")
    others = [port for port in cluster.ports if port != home]
    # Every process is given a node that does not serve the table: the client follows the
    # cluster's redirections, found by asking the node (HELLO), not by a special URL.
    writer = _start_writer(
        tmp_path, table, _node_url(others[0]), db_uri, "--coalesce-ms", "50", "--max-batch", "64"
    )
    try:
        wait_for(lambda: _writer_checks(table, _node_url(others[1])), 60, "the writer's lease")
        with Producer(table, redis_url=_node_url(others[1])) as producer:
            futures = [producer.enqueue(record(i)) for i in range(300)]
            futures += producer.enqueue_many([record(i) for i in range(300, 600)])
            await gather(futures, timeout=60)
        async with AsyncProducer(table, redis_url=_node_url(others[0])) as async_producer:
            async_futures = [await async_producer.enqueue(record(i)) for i in range(600, 800)]
            await asyncio.wait_for(asyncio.gather(*async_futures), 60)

        rows = lancedb.connect(db_uri).open_table(table).to_arrow()
        assert sorted(rows.column("id").to_pylist()) == list(range(800))

        # All of the table's keys sit on the one node that serves its hash slot.
        placed = _keys_by_node(cluster, table)
        assert list(placed) == [home]
        assert f"lancequeue:{{{table}}}:stream".encode() in placed[home]

        status = run_cli("status", "--json", "--table", table, "--redis", _node_url(others[1]))
        assert status.returncode == 0, status.stderr
        shown = json.loads(status.stdout)
        assert (shown["rows_written"], shown["table_rows"], shown["writer_alive"]) == (
            800,
            800,
            True,
        )
    finally:
        writer.close()


def _subscribers(cluster: LoopbackCluster, channel: str) -> int:
    total = 0
    for port in cluster.ports:
        with redis.Redis(port=port) as node:
            total += int(node.pubsub_numsub(channel)[0][1])
    return total


def test_a_producer_held_back_by_a_full_queue_on_a_cluster_is_woken_by_the_writer_s_flush(
    cluster: LoopbackCluster, tmp_path: Path
) -> None:
    """The wait for room is on the flush channel (pub/sub across the cluster's nodes); a
    ``redis+cluster://`` URL names a cluster without asking the server."""
    table = "cluster_full"
    db_uri = str(tmp_path / "db")
    url = _node_url(cluster.ports[0], "redis+cluster")
    flushed = f"lancequeue:{{{table}}}:flushed"
    with redis.RedisCluster(host="127.0.0.1", port=cluster.ports[0]) as admin:
        admin.hset(f"lancequeue:{{{table}}}:config", "max_queue_size", 4)
        # Re-checks a full queue only once a minute: only the writer's flush message can wake
        # it. Its buffer holds one record.
        with Producer(
            table, redis_url=url, room_recheck_ms=60_000, max_buffered_records=1
        ) as producer:
            first = producer.enqueue_many([record(i) for i in range(4)])
            wait_for(lambda: queued_records(admin, table) == 4, 30, "four records queued")
            # The queue is full: the record's future fails with QueueFull at its deadline.
            started = time.monotonic()
            over = producer.enqueue(record(4), timeout=0.2)
            assert isinstance(over.exception(timeout=30), QueueFull)
            assert 0.2 <= time.monotonic() - started <= 0.2 + DEADLINE_SLACK_S
            wait_for(lambda: _subscribers(cluster, flushed) == 0, 30, "the sender to give up")
            # The sender takes the next record and waits for room, subscribed; the one after
            # fills the buffer; then enqueue waits.
            fifth = producer.enqueue(record(5), timeout=60)
            wait_for(lambda: _subscribers(cluster, flushed) == 1, 30, "the sender to subscribe")
            sixth = producer.enqueue(record(6), timeout=61)
            called_at: list[float] = []
            returned: list[tuple[Future[WriteResult], float]] = []

            def enqueue_eighth() -> None:
                called_at.append(time.monotonic())
                future = producer.enqueue(record(8), timeout=62)
                returned.append((future, time.monotonic()))

            waiting = threading.Thread(target=enqueue_eighth)
            waiting.start()
            wait_for(lambda: called_at, 30, "the eighth enqueue")
            started = time.monotonic()
            with pytest.raises(QueueFull):
                producer.enqueue(record(7), timeout=0.2)
            assert time.monotonic() - started >= 0.2
            assert not returned  # the eighth enqueue waits too
            assert queued_records(admin, table) == 4
            writer_started_at = time.monotonic()
            writer = _start_writer(
                tmp_path, table, url, db_uri, "--max-queue-size", "4", "--max-batch", "4"
            )
            try:
                waiting.join(30)  # woken by the flushes, well before the once-a-minute recheck
                assert len(returned) == 1
                eighth, returned_at = returned[0]
                assert returned_at >= writer_started_at
                for future in [*first, fifth, sixth, eighth]:
                    future.result(timeout=60)
            finally:
                writer.close()
    rows = lancedb.connect(db_uri).open_table(table).to_arrow()
    assert sorted(rows.column("id").to_pylist()) == [0, 1, 2, 3, 5, 6, 8]


def test_a_writer_and_a_producer_wait_out_a_cluster_outage_and_every_record_lands(
    cluster: LoopbackCluster, tmp_path: Path
) -> None:
    table = "cluster_outage"
    db_uri = str(tmp_path / "db")
    url = _node_url(cluster.ports[1])
    writer = _start_writer(tmp_path, table, url, db_uri, "--coalesce-ms", "20")
    try:
        wait_for(lambda: _writer_checks(table, url), 60, "the writer's lease")
        with Producer(table, redis_url=url) as producer:
            producer.write_many([record(i) for i in range(100)], timeout=60)
            cluster.stop()
            wait_for(lambda: "redis: " in writer.log(), 60, "the writer to notice the outage")
            during: list[Future[WriteResult]] = []
            sending = threading.Thread(
                target=lambda: during.extend(
                    producer.enqueue_many([record(i) for i in range(100, 200)], timeout=90)
                )
            )
            sending.start()  # waits for Redis, retrying
            cluster.resume()
            sending.join(90)
            for future in during:
                future.result(timeout=90)
        assert writer.process.poll() is None  # the same writer, never restarted
        rows = lancedb.connect(db_uri).open_table(table).to_arrow()
        assert sorted(rows.column("id").to_pylist()) == list(range(200))
    finally:
        writer.close()
