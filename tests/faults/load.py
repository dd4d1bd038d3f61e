"""A load-generating producer process for the fault tests::

    python -m tests.faults.load --redis URL --table docs --first-id 1000000 \\
        --out outcomes.jsonl --stop-file stop [--rate 50] [--timeout-s 60] [--seed 1]

Sends records with ids ``first_id``, ``first_id + 1``, ... in small chunks (``enqueue_many``) at
about ``rate`` records a second until ``stop-file`` exists (or ``--max-records`` were sent), then
closes the producer, which waits for the writer's answers, and exits 0. Each record's outcome is
appended to ``out`` as one JSON line as soon as it is known::

    {"id": 17, "outcome": "ok"}
    {"id": 18, "outcome": "WriteFailed", "message": "..."}

and the last line says how many records were sent: ``{"done": true, "first_id": 1000000,
"sent": 912}``. Imports neither lancedb nor the tests' support module, so it starts fast.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import functools
import json
import logging
import sys
import threading
import time
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from lancequeue.producer import Producer

DIMENSIONS = 8
_MAX_CHUNK = 8
_DRAIN_TIMEOUT_S = 30.0


class OutcomeLog:
    """The outcome file: one JSON line per answered record, written from the reply thread."""

    def __init__(self, path: Path) -> None:
        self._file: TextIO = path.open("a", encoding="utf-8")
        self._written = 0
        self._changed = threading.Condition()

    def record(self, record_id: int, future: concurrent.futures.Future[None]) -> None:
        """Done-callback of a record's future."""
        error = future.exception()
        line: dict[str, Any] = {"id": record_id, "outcome": "ok"}
        if error is not None:
            line = {"id": record_id, "outcome": type(error).__name__, "message": str(error)[:400]}
        with self._changed:
            self._file.write(json.dumps(line) + "\n")
            self._file.flush()
            self._written += 1
            self._changed.notify_all()

    def wait_for(self, count: int, timeout_s: float) -> bool:
        """Wait until ``count`` outcomes are written (done-callbacks may run after ``close``)."""
        with self._changed:
            return self._changed.wait_for(lambda: self._written >= count, timeout_s)

    def finish(self, first_id: int, sent: int) -> None:
        with self._changed:
            self._file.write(json.dumps({"done": True, "first_id": first_id, "sent": sent}) + "\n")
            self._file.close()


def make_record(record_id: int, rng: np.random.Generator) -> dict[str, Any]:
    return {
        "id": record_id,
        "text": f"record {record_id}",
        "vector": rng.random(DIMENSIONS, dtype=np.float32),
    }


def run(args: argparse.Namespace) -> int:
    rng = np.random.default_rng(args.seed)
    log = OutcomeLog(Path(args.out))
    stop_file = Path(args.stop_file)
    producer = Producer(args.table, redis_url=args.redis, timeout_ms=int(args.timeout_s * 1000))
    sent = 0
    try:
        while sent < args.max_records and not stop_file.exists():
            tick = time.monotonic()
            size = min(int(rng.integers(1, _MAX_CHUNK + 1)), args.max_records - sent)
            ids = range(args.first_id + sent, args.first_id + sent + size)
            futures = producer.enqueue_many([make_record(i, rng) for i in ids])
            for record_id, future in zip(ids, futures, strict=True):
                future.add_done_callback(functools.partial(log.record, record_id))
            sent += size
            pause = size / args.rate - (time.monotonic() - tick)
            if pause > 0:
                time.sleep(pause)  # pacing the load, not waiting for anything
    finally:
        producer.close()  # waits for the answers (close_timeout_ms), fails what is left
        answered = log.wait_for(sent, _DRAIN_TIMEOUT_S)
        log.finish(args.first_id, sent)
    if not answered:
        print(f"only some of {sent} outcomes were recorded", file=sys.stderr)
        return 3
    return 0


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.faults.load", description=__doc__)
    parser.add_argument("--redis", required=True)
    parser.add_argument("--table", default="docs")
    parser.add_argument("--first-id", type=int, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--stop-file", required=True)
    parser.add_argument("--rate", type=float, default=50.0, help="records a second")
    parser.add_argument("--timeout-s", type=float, default=60.0, help="each record's timeout")
    parser.add_argument("--max-records", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return run(parse(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
