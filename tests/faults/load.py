"""A load-generating producer process for the fault tests::

    python -m tests.faults.load --redis URL --table docs --first-id 1000000 \\
        --out outcomes.jsonl --stop-file stop [--rate 50] [--timeout-s 60] [--grace-ms 10000] \\
        [--seed 1] [--max-records N] [--chunk N] [--close-timeout-s 30] \\
        [--hold-after N --go-file F]

Sends records with ids ``first_id``, ``first_id + 1``, ... in small chunks (``enqueue_many``) at
about ``rate`` records a second until ``stop-file`` exists (or ``--max-records`` were sent), then
closes the producer, which waits for the writer's answers, and exits 0. With ``--hold-after N``
it stops after its first N records until ``go-file`` exists (a test does something in between).

Before each chunk is handed to the producer, one line says which ids it holds; each record's
outcome is appended as one JSON line as soon as it is known, with a digest of the record's
content and how late its future resolved, in seconds after its deadline plus the answer grace
(negative: in time)::

    {"enqueued": 17, "count": 3}
    {"id": 17, "outcome": "ok", "digest": "9f2c...", "late_s": -3.912}
    {"id": 18, "outcome": "WriteFailed", "message": "...", "digest": "...", "late_s": -2.1}

and the last line says how many records were sent: ``{"done": true, "first_id": 1000000,
"sent": 912}``. Imports neither lancedb nor the tests' support module, so it starts fast.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import functools
import hashlib
import json
import logging
import sys
import threading
import time
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from lancequeue.producer import Producer, WriteResult

DIMENSIONS = 8
_MAX_CHUNK = 8
_DRAIN_TIMEOUT_S = 30.0
_HOLD_TIMEOUT_S = 120.0
DEFAULT_GRACE_MS = 10_000
"""The producer's own default ``answer_grace_ms``."""


def digest(record_id: int, text: str, vector: bytes) -> str:
    """What a record holds, in a few bytes: the check compares it with the table's rows, so a
    row with the right id and someone else's content does not pass for the record."""
    return hashlib.sha1(f"{record_id}|{text}|".encode() + vector).hexdigest()[:16]


def record_digest(record: dict[str, Any]) -> str:
    vector = np.asarray(record["vector"], dtype="<f4").tobytes()
    return digest(int(record["id"]), str(record["text"]), vector)


class OutcomeLog:
    """The outcome file: one JSON line per answered record, written from the reply thread."""

    def __init__(self, path: Path) -> None:
        self._file: TextIO = path.open("a", encoding="utf-8")
        self._written = 0
        self._changed = threading.Condition()

    def enqueued(self, first_id: int, count: int) -> None:
        """Say which ids are about to be handed to the producer."""
        self._write({"enqueued": first_id, "count": count}, counts=False)

    def record(
        self,
        record_id: int,
        content: str,
        due: float,
        future: concurrent.futures.Future[WriteResult],
    ) -> None:
        """Done-callback of a record's future (``due``: its deadline plus the answer grace, in
        ``time.monotonic()``). Added once ``enqueue_many`` returned: a future failed while the
        call blocked resolves, for its caller, when the call returns."""
        late_s = round(time.monotonic() - due, 3)
        error = future.exception()
        line: dict[str, Any] = {"id": record_id, "outcome": "ok"}
        if error is not None:
            line = {"id": record_id, "outcome": type(error).__name__, "message": str(error)[:400]}
        line.update(digest=content, late_s=late_s)
        self._write(line)

    def _write(self, line: dict[str, Any], counts: bool = True) -> None:
        with self._changed:
            self._file.write(json.dumps(line) + "\n")
            self._file.flush()
            if counts:
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


def wait_for_file(paths: list[Path], timeout_s: float) -> bool:
    """Poll until one of ``paths`` exists (the test creates it), up to ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not any(path.exists() for path in paths):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)  # poll
    return True


def run(args: argparse.Namespace) -> int:
    rng = np.random.default_rng(args.seed)
    log = OutcomeLog(Path(args.out))
    stop_file = Path(args.stop_file)
    grace_ms = DEFAULT_GRACE_MS if args.grace_ms is None else args.grace_ms
    producer = Producer(
        args.table,
        redis_url=args.redis,
        timeout_ms=int(args.timeout_s * 1000),
        answer_grace_ms=grace_ms,
        close_timeout_ms=int(args.close_timeout_s * 1000),
    )
    sent = 0
    holding = args.hold_after is not None
    try:
        while sent < args.max_records and not stop_file.exists():
            if holding and sent >= args.hold_after:
                holding = False
                if not wait_for_file([Path(args.go_file), stop_file], _HOLD_TIMEOUT_S):
                    print(f"{args.go_file} never appeared", file=sys.stderr)
                    break
                continue
            tick = time.monotonic()
            size = args.chunk or int(rng.integers(1, _MAX_CHUNK + 1))
            size = min(size, args.max_records - sent)
            if holding:
                size = min(size, args.hold_after - sent)
            ids = range(args.first_id + sent, args.first_id + sent + size)
            records = [make_record(i, rng) for i in ids]
            log.enqueued(ids[0], size)
            started = time.monotonic()
            futures = producer.enqueue_many(records)
            due = started + args.timeout_s + grace_ms / 1000
            for record, future in zip(records, futures, strict=True):
                callback = functools.partial(log.record, record["id"], record_digest(record), due)
                future.add_done_callback(callback)
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
    parser.add_argument("--grace-ms", type=int, default=None, help="the producer's answer_grace_ms")
    parser.add_argument(
        "--close-timeout-s", type=float, default=30.0, help="how long close() waits for answers"
    )
    parser.add_argument("--max-records", type=int, default=100_000)
    parser.add_argument(
        "--chunk", type=int, default=0, help="records per enqueue call (0: 1 to 8 at random)"
    )
    parser.add_argument("--hold-after", type=int, default=None)
    parser.add_argument("--go-file", default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.hold_after is not None and args.go_file is None:
        parser.error("--hold-after needs --go-file")
    return args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return run(parse(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
