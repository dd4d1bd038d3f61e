"""Indexes that keep up: the writer brings every index of its table (vector, full-text,
scalar) up to date beside the appends, once enough rows came and once the table is quiet; it
creates a vector index on request once the table can train one."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Callable
from typing import Any

import lancedb
import numpy as np
import pytest
import redis
from lancedb.index import FTS, BTree, IvfPq
from prometheus_client.parser import text_string_to_metric_families

from lancequeue.common.errors import ConfigError
from lancequeue.common.status import read_status
from lancequeue.producer import Producer
from lancequeue.writer import Writer
from tests.support import (
    WRITTEN,
    StartWriter,
    async_wait_for,
    free_port,
    gather,
    run_cli,
    table_ids,
)

DIM = 16


def row(i: int) -> dict[str, Any]:
    words = "alpha beta" if i < 1000 else f"gamma delta word{i}"
    vector = np.random.default_rng(i).random(DIM, dtype=np.float32)
    return {"id": i, "text": f"document {i} {words}", "vector": vector}


def indexed_table(db_uri: str) -> lancedb.table.Table:
    """A table of 1,000 rows with an IVF_PQ index on ``vector``, a full-text index on ``text``
    and a B-tree on ``id``, as a LanceDB user makes them."""
    table = lancedb.connect(db_uri).create_table("docs", data=[row(i) for i in range(1000)])
    table.create_index("vector", config=IvfPq(num_partitions=2, num_sub_vectors=4))
    table.create_index("text", config=FTS())
    table.create_index("id", config=BTree())
    return table


async def until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """``async_wait_for`` of a condition that reads the table (on a thread: the writer under
    test runs on this event loop)."""
    return await async_wait_for(lambda: asyncio.to_thread(condition), timeout, what)


def unindexed(db_uri: str) -> dict[str, int]:
    table = lancedb.connect(db_uri).open_table("docs")
    return {
        index.name: table.index_stats(index.name).num_unindexed_rows
        for index in table.list_indices()
    }


async def test_once_the_queue_is_quiet_every_index_covers_every_row_and_finds_the_new_ones(
    start_writer: StartWriter,
    producer: Producer,
    client: redis.Redis,
    db_uri: str,
) -> None:
    indexed_table(db_uri)
    start_writer(reindex_quiet_ms=300, reindex_rows=1_000_000)  # only quiet brings them up
    assert await gather(producer.enqueue_many([row(i) for i in range(1000, 3000)])) == (
        [WRITTEN] * 2000
    )
    await until(
        lambda: set(unindexed(db_uri).values()) == {0}, 60, "every index to cover every row"
    )
    table = lancedb.connect(db_uri).open_table("docs")
    assert table.count_rows() == 3000
    found = table.search("word2500", query_type="fts").limit(5).to_list()
    assert [hit["id"] for hit in found] == [2500]
    near = table.search(row(2999)["vector"]).limit(1).to_list()  # through the ANN index
    assert near[0]["id"] == 2999
    # an upkeep before the last rows came published too: wait for the newest one's word
    await until(lambda: _fully_indexed(client, 3000), 30, "the status: every index up to date")


async def test_enough_new_rows_bring_the_indexes_up_to_date_without_a_quiet_spell(
    start_writer: StartWriter, producer: Producer, db_uri: str
) -> None:
    indexed_table(db_uri)
    start_writer(reindex_quiet_ms=600_000, reindex_rows=500, max_batch=100)
    for first in range(1000, 2000, 100):  # a steady stream: never quiet for ten minutes
        await gather(producer.enqueue_many([row(i) for i in range(first, first + 100)]))
    await until(lambda: max(unindexed(db_uri).values()) < 500, 60, "the upkeep at 500 new rows")


async def test_with_reindex_rows_0_the_writer_leaves_the_indexes_alone(
    start_writer: StartWriter, producer: Producer, db_uri: str
) -> None:
    indexed_table(db_uri)
    start_writer(reindex_quiet_ms=100, reindex_rows=0)
    await gather(producer.enqueue_many([row(i) for i in range(1000, 1200)]))
    assert table_ids(db_uri) == list(range(1200))
    assert set(unindexed(db_uri).values()) == {200}


async def test_vector_index_is_created_once_the_table_can_train_one_and_then_kept_up(
    start_writer: StartWriter, producer: Producer, db_uri: str
) -> None:
    start_writer(vector_index="vector", reindex_quiet_ms=200, max_batch=1024)
    await gather(producer.enqueue_many([row(i) for i in range(3000)]))
    table = lancedb.connect(db_uri).open_table("docs")
    assert table.list_indices() == []  # 3,000 rows: fewer than an index needs
    await gather(producer.enqueue_many([row(i) for i in range(3000, 5000)]))
    await until(
        lambda: unindexed(db_uri) == {"vector_idx": 0}, 60, "a vector index covering every row"
    )
    index = lancedb.connect(db_uri).open_table("docs").list_indices()[0]
    assert index.index_type == "IvfPq" and index.columns == ["vector"]


async def test_compaction_and_index_upkeep_together_lose_nothing(
    start_writer: StartWriter, producer: Producer, db_uri: str
) -> None:
    indexed_table(db_uri)
    start_writer(max_batch=50, compact_every="2", reindex_rows=100, reindex_quiet_ms=200)
    for first in range(1000, 3000, 50):
        await gather(producer.enqueue_many([row(i) for i in range(first, first + 50)]))
    await until(
        lambda: set(unindexed(db_uri).values()) == {0}, 60, "every index to cover every row"
    )
    assert table_ids(db_uri) == list(range(3000))  # each row once
    table = lancedb.connect(db_uri).open_table("docs")
    assert len(table.to_lance().get_fragments()) < 40  # compaction ran too
    assert [hit["id"] for hit in table.search("word2999", query_type="fts").to_list()] == [2999]


@pytest.mark.parametrize("column", ["missing", "text"])
async def test_a_vector_index_on_a_column_that_is_not_a_vector_column_stops_the_writer(
    redis_url: str, db_uri: str, column: str
) -> None:
    lancedb.connect(db_uri).create_table("docs", data=[row(i) for i in range(10)])
    with pytest.raises(ConfigError, match="no vector column of that name"):
        await Writer(table="docs", redis_url=redis_url, db_uri=db_uri, vector_index=column).run()


async def test_a_vector_index_on_a_table_the_first_batch_makes_without_it_is_logged_once(
    start_writer: StartWriter, producer: Producer, db_uri: str, caplog: pytest.LogCaptureFixture
) -> None:
    start_writer(vector_index="embedding", reindex_quiet_ms=50)
    await gather(producer.enqueue_many([row(i) for i in range(10)]))
    await until(lambda: "no vector column of that name" in caplog.text, 30, "the error logged")
    assert caplog.text.count("no vector column of that name") == 1
    assert table_ids(db_uri) == list(range(10))  # the writer kept writing


async def test_status_and_metrics_show_each_index_s_indexed_and_unindexed_rows(
    start_writer: StartWriter, producer: Producer, client: redis.Redis, redis_url: str, db_uri: str
) -> None:
    indexed_table(db_uri)
    port = free_port()
    start_writer(reindex_quiet_ms=200, metrics_port=port)
    await gather(producer.enqueue_many([row(i) for i in range(1000, 1300)]))
    await until(lambda: _fully_indexed(client, 1300), 60, "the status: every index up to date")

    def scraped() -> dict[tuple[str, str], float]:
        url = f"http://127.0.0.1:{port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        return {
            (sample.name, sample.labels["index"]): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name.startswith("lancequeue_index_")
        }

    metrics = await asyncio.to_thread(scraped)
    for name in ("id_idx", "text_idx", "vector_idx"):
        assert metrics[("lancequeue_index_indexed_rows", name)] == 1300
        assert metrics[("lancequeue_index_unindexed_rows", name)] == 0
    shown = await asyncio.to_thread(run_cli, "status", "--table", "docs", "--redis", redis_url)
    assert (
        "index text_idx (Inverted)" in shown.stdout and "1300 rows indexed, 0 not" in shown.stdout
    )


def _fully_indexed(client: redis.Redis, rows: int) -> bool:
    """Whether the status shows the three indexes covering the table's ``rows`` rows."""
    indexes = read_status(client, "docs")["indexes"]
    names = sorted(index["name"] for index in indexes)
    return names == ["id_idx", "text_idx", "vector_idx"] and all(
        index["indexed_rows"] == rows and index["unindexed_rows"] == 0 for index in indexes
    )
