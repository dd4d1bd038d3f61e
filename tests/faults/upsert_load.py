"""A producer process upserting rounds of values by key, for the upsert fault test.

``python -m tests.faults.upsert_load --redis URL --producer P --rounds R --shared K --own K``:
round r upserts ``{"key": k, "producer": P, "n": r}`` for the ``--shared`` keys every producer
writes (0 to K-1) and for this producer's own keys, then waits until every record of the round
is answered; it exits 0 once every record of every round was written, 1 at the first error.
"""

from __future__ import annotations

import argparse
import sys

from lancequeue.producer import Producer

OWN_KEYS_FROM = 1_000_000
"""Producer P's own keys start at (P + 1) times this."""


def own_keys(producer: int, count: int) -> list[int]:
    first = (producer + 1) * OWN_KEYS_FROM
    return list(range(first, first + count))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis", required=True)
    parser.add_argument("--table", default="docs")
    parser.add_argument("--producer", type=int, required=True)
    parser.add_argument("--rounds", type=int, required=True)
    parser.add_argument("--shared", type=int, required=True)
    parser.add_argument("--own", type=int, required=True)
    args = parser.parse_args()
    keys = [*range(args.shared), *own_keys(args.producer, args.own)]
    with Producer(args.table, redis_url=args.redis, timeout_ms=120_000) as producer:
        for number in range(args.rounds):
            futures = producer.enqueue_many(
                {"key": key, "producer": args.producer, "n": number} for key in keys
            )
            for future in futures:
                error = future.exception()
                if error is not None:
                    print(f"round {number}: {type(error).__name__}: {error}", file=sys.stderr)
                    return 1
            print(f"round {number} written", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
