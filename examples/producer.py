"""An example producer program: writes COUNT records (text plus a 384-dim float32 vector) to a
table and reports how fast they were acknowledged.

    LANCEQUEUE_REDIS=redis://localhost:6379 python examples/producer.py --table docs --count 1000

With no Redis URL it uses the embedded server of the data directory, which the writer starts
(a producer never starts one: it fails at once if none is running).
"""

from __future__ import annotations

import argparse
import os
import secrets
import time

import numpy as np

from lancequeue.producer import Producer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", default=os.environ.get("LANCEQUEUE_TABLE", "docs"))
    parser.add_argument("--count", type=int, default=1000, help="records to write")
    parser.add_argument("--dim", type=int, default=384, help="vector dimension")
    parser.add_argument(
        "--first-id",
        type=int,
        default=None,
        help="id of the first record (default: a random block of ids, so that several copies "
        "of this program, such as compose's replicas, write distinct ids)",
    )
    parser.add_argument("--batch", type=int, default=256, help="records sent together")
    parser.add_argument("--data-dir", default=None, help="embedded Redis data directory")
    args = parser.parse_args()
    if args.first_id is None:
        args.first_id = secrets.randbits(31) * 1_000_000  # blocks of a million ids
    rng = np.random.default_rng(args.first_id)
    started = time.perf_counter()
    with Producer(args.table, data_dir=args.data_dir) as producer:
        for start in range(args.first_id, args.first_id + args.count, args.batch):
            stop = min(start + args.batch, args.first_id + args.count)
            producer.write_many(
                [
                    {
                        "id": i,
                        "text": f"document {i} from process {os.getpid()}",
                        "vector": rng.random(args.dim, dtype=np.float32),
                    }
                    for i in range(start, stop)
                ],
                timeout=120,
            )
    elapsed = time.perf_counter() - started
    print(f"pid {os.getpid()}: {args.count} records written in {elapsed:.2f}s")


if __name__ == "__main__":
    main()
