"""Size-tiered compaction: when the writer compacts, and what a compacted table keeps."""

from __future__ import annotations

import asyncio

import lance
import numpy as np
import pyarrow as pa
from lance.file import LanceFileReader

from lancequeue.producer import Producer
from lancequeue.writer.table import TableSink
from lancequeue.writer.watermark import Watermark
from tests.support import (
    WRITTEN,
    FixedToken,
    StartWriter,
    async_wait_for,
    gather,
    record,
    table_ids,
)


def _fragments(db_uri: str) -> list[int]:
    dataset = lance.dataset(f"{db_uri}/docs.lance")
    return [fragment.metadata.physical_rows for fragment in dataset.get_fragments()]


def _version_count(db_uri: str) -> int | None:
    """The table's version count; None if a cleanup deleted a version while it was listed
    (Lance lists the manifests, then reads each one)."""
    try:
        return len(lance.dataset(f"{db_uri}/docs.lance").versions())
    except ValueError as exc:
        if "Not found" not in str(exc):
            raise
        return None


async def test_a_writer_keeps_the_fragment_count_bounded_and_every_row(
    start_writer: StartWriter, producer: Producer, db_uri: str
) -> None:
    start_writer(max_batch=2, coalesce_ms=60_000, compact_every=4, keep_versions=3)
    for first in range(0, 64, 2):  # 32 flushes of two records
        assert (
            await gather(producer.enqueue_many([record(first), record(first + 1)])) == [WRITTEN] * 2
        )

    # Compaction runs beside the appends (the in-process writer's loop must run meanwhile): the
    # bound holds once the last one is done; the last flush was a full batch, so that one
    # waits for the catch-up after CATCH_UP_S without a commit.
    async def bounded() -> list[int] | None:
        found = _fragments(db_uri)
        return found if found and len(found) < 12 else None

    rows = await async_wait_for(bounded, 30, "compaction to catch up")
    # 32 appends: tiers under 8, 32 and 128 rows hold at most 3 fragments each
    assert sum(rows) == 64
    assert table_ids(db_uri) == list(range(64))

    # the 3 kept at the last compaction (at most 3 appends after one, when batches are not full)
    async def cleaned() -> bool:
        count = _version_count(db_uri)
        return count is not None and count <= 3 + 3

    await async_wait_for(cleaned, 30, "old versions to be cleaned up")


async def test_compact_every_zero_leaves_one_fragment_per_flush(
    start_writer: StartWriter, producer: Producer, db_uri: str
) -> None:
    start_writer(max_batch=2, coalesce_ms=60_000, compact_every="0")
    for first in range(0, 12, 2):
        assert (
            await gather(producer.enqueue_many([record(first), record(first + 1)])) == [WRITTEN] * 2
        )
    assert _fragments(db_uri) == [2] * 6


VECTORS = pa.schema(
    [("id", pa.int64()), ("text", pa.string()), ("vector", pa.list_(pa.float32(), 8))]
)


async def test_a_large_merge_commits_a_bounded_number_of_rows_at_a_time_and_keeps_every_value(
    db_uri: str,
) -> None:
    """24 fragments of 10 rows, merged towards 40-row fragments with at most 80 source rows a
    commit: three commits of two output fragments each, the oldest first, every value kept as
    written (Lance copies the data pages as they are)."""
    sink, _ = await TableSink.open(db_uri, "docs", VECTORS, 64 * 1024 * 1024, FixedToken(), "w")
    vectors = np.random.default_rng(7).standard_normal((240, 8), dtype=np.float32)
    for batch in range(24):
        ids = range(batch * 10, batch * 10 + 10)
        table = pa.table(
            {
                "id": list(ids),
                "text": [f"doc {i}" for i in ids],
                "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors[ids].ravel()), 8),
            },
            schema=VECTORS,
        )
        fragments = await sink.write(table)
        await sink.commit(fragments, 10, Watermark("epoch", f"{batch + 1}-0", {}))
    seen, merged = [], []
    while (rows := await sink.compact(40, keep_versions=2, commit_rows=80)) is not None:
        seen.append(sorted(rows))  # Lance lists a rewrite's fragments after the others
        merged.append(_merged_ids(db_uri))
        if len(seen) > 10:
            break
    assert seen == [[10] * 16 + [40] * 2, [10] * 8 + [40] * 4, [40] * 6]
    assert merged == [list(range(80)), list(range(160)), list(range(240))]  # the oldest first
    assert _pages_per_column(db_uri) == {4}  # each source fragment's page, copied as it was
    written = lance.dataset(f"{db_uri}/docs.lance").to_table().sort_by("id")
    assert written["id"].to_pylist() == list(range(240))
    assert written["text"].to_pylist() == [f"doc {i}" for i in range(240)]
    stored = written["vector"].combine_chunks().flatten().to_numpy().reshape(240, 8)
    assert np.array_equal(stored, vectors)


def _merged_ids(db_uri: str) -> list[int]:
    """The ids held by the table's 40-row fragments (those compaction made), sorted."""
    dataset = lance.dataset(f"{db_uri}/docs.lance")
    return sorted(
        id_
        for fragment in dataset.get_fragments()
        if fragment.count_rows() == 40
        for id_ in fragment.to_table(columns=["id"])["id"].to_pylist()
    )


def _pages_per_column(db_uri: str) -> set[int]:
    """How many pages each column has in each data file of the table."""
    uri = f"{db_uri}/docs.lance"
    return {
        len(column.pages)
        for fragment in lance.dataset(uri).get_fragments()
        for data_file in fragment.data_files()
        for column in LanceFileReader(f"{uri}/data/{data_file.path}").metadata().columns
    }


IDS = pa.schema([("id", pa.int64())])


async def test_a_compaction_commits_while_appends_stream_and_nothing_is_lost(db_uri: str) -> None:
    """Appends commit back to back while a compaction of many fragments runs. Lance alone lets
    a ``Rewrite`` planned many versions ago lose the race to such appends again and again,
    until it gives up after 20 retries; the writer's commits take turns, so the compaction
    commits and every row stays."""
    sink, _ = await TableSink.open(db_uri, "docs", IDS, 64 * 1024 * 1024, FixedToken(), "w")
    appended = 0

    async def append() -> None:
        nonlocal appended
        table = pa.table({"id": list(range(appended * 5, appended * 5 + 5))}, schema=IDS)
        fragments = await sink.write(table)
        await sink.commit(fragments, 5, Watermark("epoch", f"{appended + 1}-0", {}))
        appended += 1

    while appended < 1000:
        await append()
    compaction = asyncio.create_task(sink.compact(10**6, keep_versions=2, commit_rows=10**6))
    while not compaction.done():
        await append()
    rows = await compaction  # raises what Lance raised if the Rewrite never got to commit
    assert rows is not None and sorted(rows)[-1] >= 5000
    assert table_ids(db_uri) == list(range(appended * 5))
