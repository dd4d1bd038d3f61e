"""One baseline in a process of its own (so its memory is its own):
``python -m lancequeue.bench.baseline_child SYSTEM ...`` generates the records, runs the
system, and writes a JSON result."""

from __future__ import annotations

import argparse
import resource
import sys
from pathlib import Path
from typing import Any

from lancequeue.bench.in_process import run_in_process
from lancequeue.bench.latency import latency_summary_ms
from lancequeue.bench.limit import run_limit
from lancequeue.bench.naive import run_naive
from lancequeue.bench.records import make_records
from lancequeue.bench.result import write_result
from lancequeue.common.codec import encode_record

SYSTEMS = ("naive", "in_process", "limit", "dicts")
"""The baselines this module runs: (a), (b) and (c), and (c) given dicts (the drain mode's)."""


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m lancequeue.bench.baseline_child",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("system", choices=SYSTEMS)
    parser.add_argument("--db", type=Path, required=True, help="Database directory.")
    parser.add_argument("--count", type=int, required=True, help="Records 0 .. count-1.")
    parser.add_argument("--dim", type=int, required=True)
    parser.add_argument("--text-bytes", type=int, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--max-batch", type=int, required=True)
    parser.add_argument("--coalesce-ms", type=int, required=True)
    parser.add_argument("--callers", type=int, required=True)
    parser.add_argument("--max-queue-size", type=int, required=True)
    parser.add_argument("--result", type=Path, required=True)
    return parser.parse_args(argv)


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Generate the records (not timed), run the system; its result."""
    records = make_records(0, args.count, args.dim, args.text_bytes, args.seed)
    encoded_bytes = sum(len(encode_record(record)) for record in records)
    args.db.mkdir(parents=True, exist_ok=True)
    cpu_before = _cpu_s()
    if args.system == "naive":
        outcome = run_naive(records, args.db, args.dim)
    elif args.system == "in_process":
        outcome = run_in_process(
            records,
            args.db,
            args.dim,
            args.max_batch,
            args.coalesce_ms,
            args.callers,
            args.max_queue_size,
        )
    else:
        outcome = run_limit(records, args.db, args.dim, args.max_batch, args.system == "dicts")
    cpu_window_s = _cpu_s() - cpu_before
    return {
        "records": args.count,
        "seconds": outcome["seconds"],
        "batches": outcome["batches"],
        "encoded_bytes": encoded_bytes,
        "latency": latency_summary_ms(outcome["latencies_s"]) if "latencies_s" in outcome else None,
        "append": latency_summary_ms(outcome["append_s"]) if "append_s" in outcome else None,
        "cpu_s_window": round(cpu_window_s, 3),
    }


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the baseline and write its JSON result (``error`` in it on failure)."""
    args = _parse_args(argv)
    return write_result(args.result, lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
