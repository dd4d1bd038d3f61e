"""What the single writer's extras cost and buy: upserts through the queue against one process
calling LanceDB's ``merge_insert`` per batch, and queries on a table the writer keeps indexed
against the same table with an unindexed tail.

    python -m lancequeue.bench.keyed --records 40000 --keys 20000 --batches 128,1024
    python -m lancequeue.bench.keyed --index-rows 100000 --tail 20000

Upserts: ``--records`` records over ``--keys`` ids (so about half update a row), 384-dim
vectors and a short text. The writer (``--upsert-key id --max-batch B``) is stopped while one
producer leaves them all in Redis, then timed alone until the queue is empty; its CPU is read
from the kernel at both ends. The baseline, in a process of its own, calls LanceDB's
``table.merge_insert("id").when_matched_update_all().when_not_matched_insert_all()`` on the same
records in batches of B (as Arrow). Both tables must end with the same rows.

Index tail: a table of ``--index-rows`` rows with an IVF_PQ and a full-text index takes
``--tail`` more rows through the writer, once with index upkeep (the default) and once with
``--reindex-rows 0``; then the p50 of 50 vector queries (k=10) and 50 full-text queries on each.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import redis

from lancequeue.bench.processes import Children
from lancequeue.bench.redis_server import start_redis
from lancequeue.bench.writer_process import start_writer, wait_writer_ready
from lancequeue.common.status import read_status

TABLE = "keyed"
DIM = 384
_POLL_S = 0.005


def records(count: int, keys: int, seed: int = 0) -> list[dict[str, Any]]:
    """``count`` records over ids ``0`` … ``keys - 1`` (record i has id ``i % keys``)."""
    rng = np.random.default_rng(seed)
    vectors = rng.random((count, DIM), dtype=np.float32)
    return [
        {"id": i % keys, "text": f"record {i} of key {i % keys}", "n": i, "vector": vectors[i]}
        for i in range(count)
    ]


def _drained(client: redis.Redis) -> bool:
    status = read_status(client, TABLE)
    return bool(status["queue_depth"] == 0 and status["pending"] == 0)


def writer_upserts(rows: list[dict[str, Any]], batch: int, work: Path) -> dict[str, Any]:
    """The writer alone draining ``rows`` as upserts by ``id`` at ``--max-batch batch``."""
    import psutil  # the bench extra

    from lancequeue.producer import Producer

    work.mkdir(parents=True, exist_ok=True)
    with Children() as children:
        redis_process, url = start_redis(work)
        children.add(redis_process)
        client = redis.Redis.from_url(url)
        log = work / "writer.log"
        flags = ("--upsert-key", "id", "--max-queue-size", str(len(rows)), "--lease-ms", "3600000")
        writer = children.add(start_writer(url, work / "db", TABLE, batch, 100, flags, log))
        wait_writer_ready(writer, client, TABLE, log)
        os.kill(writer.pid, signal.SIGSTOP)
        producer = Producer(TABLE, redis_url=url, timeout_ms=3_600_000)
        try:
            for first in range(0, len(rows), 256):
                producer.enqueue_many(rows[first : first + 256])
            while read_status(client, TABLE)["queue_depth"] < len(rows):
                time.sleep(_POLL_S)  # the whole backlog is in Redis before the clock starts
            cpu = psutil.Process(writer.pid).cpu_times()
            before = cpu.user + cpu.system
            os.kill(writer.pid, signal.SIGCONT)
            started = time.monotonic()
            while not _drained(client):
                time.sleep(_POLL_S)  # the status is the writer's only word on its progress
            seconds = time.monotonic() - started
            cpu = psutil.Process(writer.pid).cpu_times()
            cpu_s = cpu.user + cpu.system - before
        finally:
            os.kill(writer.pid, signal.SIGCONT)
            producer.close()
        client.close()
    return {"batch": batch, "seconds": seconds, "cpu_s": cpu_s, "table": str(work / "db")}


def merge_insert_child(rows_path: str, db: str, batch: int) -> None:
    """The baseline: one process, ``merge_insert`` per batch (run in a process of its own)."""
    import lancedb
    import pyarrow as pa

    loaded = np.load(rows_path)
    ids, ns, vectors = loaded["ids"], loaded["ns"], loaded["vectors"]
    texts = [f"record {n} of key {key}" for n, key in zip(ns, ids, strict=True)]
    vector_type = pa.list_(pa.float32(), DIM)
    batches = []
    for first in range(0, len(ids), batch):
        end = first + batch
        chunk = pa.table(
            {
                "id": pa.array(ids[first:end]),
                "text": pa.array(texts[first:end]),
                "n": pa.array(ns[first:end]),
                "vector": pa.FixedSizeListArray.from_arrays(
                    pa.array(vectors[first:end].reshape(-1)), DIM
                ).cast(vector_type),
            }
        )
        # a batch holds a key at most once, as the writer's does after it settles the batch
        batches.append(_last_per_key(chunk))
    table = lancedb.connect(db).create_table(TABLE, schema=batches[0].schema)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    before = usage.ru_utime + usage.ru_stime
    started = time.monotonic()
    for chunk in batches:
        table.merge_insert("id").when_matched_update_all().when_not_matched_insert_all().execute(
            chunk
        )
    seconds = time.monotonic() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"seconds": seconds, "cpu_s": usage.ru_utime + usage.ru_stime - before}))


def _last_per_key(chunk: Any) -> Any:
    import pyarrow as pa

    positions = pa.array(range(chunk.num_rows))
    last = (
        chunk.append_column("_at", positions)
        .group_by("id")
        .aggregate([("_at", "max")])
        .column("_at_max")
    )
    return chunk.take(pa.compute.sort_indices(last))


def baseline_upserts(rows: list[dict[str, Any]], batch: int, work: Path) -> dict[str, Any]:
    work.mkdir(parents=True, exist_ok=True)
    path = work / "rows.npz"
    np.savez(
        path,
        ids=np.array([r["id"] for r in rows]),
        ns=np.array([r["n"] for r in rows]),
        vectors=np.stack([r["vector"] for r in rows]),
    )
    code = (
        "import sys; from lancequeue.bench.keyed import merge_insert_child; "
        "merge_insert_child(sys.argv[1], sys.argv[2], int(sys.argv[3]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(path), str(work / "db"), str(batch)],
        capture_output=True,
        text=True,
        check=True,
    )
    return {"batch": batch, **json.loads(done.stdout.strip().splitlines()[-1])}


def same_rows(first_db: str, second_db: str) -> bool:
    import lancedb

    def rows_of(db: str) -> list[tuple[int, int]]:
        table = lancedb.connect(db).open_table(TABLE).to_arrow()
        columns = (table.column("id").to_pylist(), table.column("n").to_pylist())
        return sorted(zip(*columns, strict=True))

    return rows_of(first_db) == rows_of(second_db)


def indexed_table(db: str, rows: int) -> None:
    """A table of ``rows`` rows (ids 0 … rows-1) with an IVF_PQ and a full-text index."""
    import lancedb
    from lancedb.index import FTS, IvfPq

    table = lancedb.connect(db).create_table(TABLE, data=records(rows, rows, seed=1))
    table.create_index("vector", config=IvfPq(num_partitions=round(rows**0.5)))
    table.create_index("text", config=FTS())


def tail_through_writer(db: str, tail: list[dict[str, Any]], keep: bool, work: Path) -> None:
    """``tail`` through a writer of ``db``'s table, keeping its indexes or not; once done (and
    its indexes up to date, if kept), the writer stops."""
    from lancequeue.producer import Producer

    work.mkdir(parents=True, exist_ok=True)
    flags = ("--reindex-quiet-ms", "500") if keep else ("--reindex-rows", "0")
    with Children() as children:
        redis_process, url = start_redis(work)
        children.add(redis_process)
        client = redis.Redis.from_url(url)
        log = work / "writer.log"
        writer = children.add(start_writer(url, Path(db), TABLE, 1024, 100, flags, log))
        wait_writer_ready(writer, client, TABLE, log)
        with Producer(TABLE, redis_url=url) as producer:
            for first in range(0, len(tail), 1024):
                producer.write_many(tail[first : first + 1024])
        while keep and not _fully_indexed(client):
            time.sleep(0.1)  # the status hash is the writer's only word on its indexes
        client.close()


def _fully_indexed(client: redis.Redis) -> bool:
    indexes = read_status(client, TABLE)["indexes"]
    return bool(indexes) and all(index["unindexed_rows"] == 0 for index in indexes)


def query_p50_ms(db: str, queries: int = 50) -> dict[str, float]:
    """p50 of ``queries`` vector queries (k=10) and full-text queries, after 5 of each."""
    import lancedb

    table = lancedb.connect(db).open_table(TABLE)
    rng = np.random.default_rng(7)
    vectors = rng.random((queries + 5, DIM), dtype=np.float32)
    words = [f"record {int(i)}" for i in rng.integers(0, 1000, queries + 5)]
    timings: dict[str, list[float]] = {"vector": [], "full text": []}
    for i in range(queries + 5):
        for kind in timings:
            started = time.perf_counter()
            if kind == "vector":
                table.search(vectors[i]).limit(10).to_list()
            else:
                table.search(words[i], query_type="fts").limit(10).to_list()
            if i >= 5:  # the first five warm the caches
                timings[kind].append((time.perf_counter() - started) * 1000)
    unindexed = {
        index.name: stats.num_unindexed_rows
        for index in table.list_indices()
        if (stats := table.index_stats(index.name)) is not None
    }
    return {
        **{kind: statistics.median(values) for kind, values in timings.items()},
        "unindexed": sum(unindexed.values()),
    }


def index_tail(index_rows: int, tail_rows: int, work: Path) -> None:
    import shutil

    base = work / "base"
    indexed_table(str(base), index_rows)
    tail = records(tail_rows, tail_rows, seed=2)
    for row in tail:
        row["id"] += index_rows
    for keep in (True, False):
        db = work / ("kept" if keep else "tail")
        shutil.copytree(base, db)
        tail_through_writer(str(db), tail, keep, work / f"run-{keep}")
        p50 = query_p50_ms(str(db))
        print(
            f"{'kept indexed by the writer' if keep else f'unindexed tail of {tail_rows:,}':32s} "
            f"vector p50 {p50['vector']:6.1f} ms, full text p50 {p50['full text']:6.1f} ms "
            f"({p50['unindexed']:,.0f} rows unindexed over both indexes)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=40_000)
    parser.add_argument("--keys", type=int, default=20_000)
    parser.add_argument("--batches", default="128,1024")
    parser.add_argument("--index-rows", type=int, default=0, help="run the index-tail comparison")
    parser.add_argument("--tail", type=int, default=20_000)
    args = parser.parse_args()
    if args.index_rows:
        with tempfile.TemporaryDirectory(prefix="lancequeue-index-") as tmp:
            index_tail(args.index_rows, args.tail, Path(tmp))
        return
    rows = records(args.records, args.keys)
    with tempfile.TemporaryDirectory(prefix="lancequeue-keyed-") as tmp:
        for batch in (int(b) for b in args.batches.split(",")):
            work = Path(tmp) / str(batch)
            mine = writer_upserts(rows, batch, work / "writer")
            theirs = baseline_upserts(rows, batch, work / "merge_insert")
            same = same_rows(mine["table"], str(work / "merge_insert" / "db"))
            for name, result in (("lancequeue writer", mine), ("merge_insert per batch", theirs)):
                print(
                    f"batch {batch:5d} {name:24s} {args.records / result['seconds']:9,.0f} "
                    f"rows/s {result['cpu_s'] / args.records * 1e6:6.1f} CPU µs/row"
                )
            print(f"  same rows in both tables: {same}")


if __name__ == "__main__":
    main()
