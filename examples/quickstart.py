"""Run the whole write path on one machine: an embedded Redis, one writer process, and four
producer processes writing real records; then search the table.

    python examples/quickstart.py [--producers 4] [--records 2000] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lancedb
import numpy as np

from lancequeue.cli.status import format_status
from lancequeue.common import embedded_redis
from lancequeue.common.status import read_status

HERE = Path(__file__).parent
LANCEQUEUE = [sys.executable, "-c", "from lancequeue.cli import main; main()"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--producers", type=int, default=4)
    parser.add_argument("--records", type=int, default=2000, help="records per producer")
    parser.add_argument("--data-dir", type=Path, default=None, help="default: a temp dir")
    args = parser.parse_args()
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="lancequeue-quickstart-"))
    print(f"data directory: {data_dir}")

    writer = subprocess.Popen(
        [*LANCEQUEUE, "writer", "--table", "docs", "--data-dir", str(data_dir)]
    )
    try:
        # The writer starts the embedded Redis; producers use it, never start one.
        deadline = time.monotonic() + 60
        while not embedded_redis.is_running(data_dir):
            if writer.poll() is not None or time.monotonic() > deadline:
                sys.exit("the writer did not start the embedded Redis")
            time.sleep(0.1)
        started = time.perf_counter()
        producers = [
            subprocess.Popen(
                [
                    sys.executable,
                    str(HERE / "producer.py"),
                    "--table",
                    "docs",
                    "--count",
                    str(args.records),
                    "--first-id",
                    str(k * args.records),
                    "--data-dir",
                    str(data_dir),
                ]
            )
            for k in range(args.producers)
        ]
        if any(p.wait() != 0 for p in producers):
            sys.exit("a producer failed")
        elapsed = time.perf_counter() - started
        total = args.producers * args.records
        print(
            f"\n{total} records from {args.producers} processes, all acknowledged, in "
            f"{elapsed:.2f}s ({total / elapsed:,.0f} rows/s including process start-up)\n"
        )
        import redis

        with redis.Redis.from_url(embedded_redis.url_for(data_dir)) as client:
            print(format_status(read_status(client, "docs")))
    finally:
        writer.send_signal(signal.SIGTERM)
        writer.wait(60)

    table = lancedb.connect(data_dir / "db").open_table("docs")
    query = np.random.default_rng(12345).random(384, dtype=np.float32)
    hits = table.search(query).limit(3).select(["id", "text", "_distance"]).to_list()
    print(f"\ntable rows: {table.count_rows()}, versions: {len(table.list_versions())}")
    print("nearest 3 to a random vector:")
    for hit in hits:
        print(f"  id={hit['id']:<6} {hit['text']}  (distance {hit['_distance']:.3f})")
    embedded_redis.stop(data_dir)


if __name__ == "__main__":
    main()
