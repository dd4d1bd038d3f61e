"""One producer process of ``lancequeue bench``: ``python -m lancequeue.bench.producer_load``.

It generates its slice of the benchmark's records, says ``ready`` on stdout and waits for a
``go`` line on stdin (the start barrier: start-up, imports and record generation are not
timed), then sends them the way ``--pattern`` says and waits for every future: ``many``,
``Producer.enqueue_many`` in chunks, as fast as it can or paced at ``--rate`` records/s;
``loop``, a plain loop of ``Producer.enqueue``; ``async-loop``, a plain loop of
``fut = await AsyncProducer.enqueue(r)``. With ``--backlog`` it neither waits for the start nor
for answers: it leaves its records in Redis for a writer that is not reading (the benchmark's
drain mode) and exits once they are all there. Each record's ack latency runs from the
call that sent it to its future resolving; one record in ``TIMED_EVERY`` is timed, so that
timing does not add to what the producer costs. It writes a JSON result
(counts, errors, times on the machine-wide monotonic clock, bytes sent, its peak RSS and CPU
seconds) and, with ``--latencies``, every latency timed, in ms, as a float32 ``.npy`` file.

Extra ``Producer`` keywords come as JSON (``--producer-options '{"chunk_records": 512}'``), so
new producer settings need no change here.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import resource
import sys
import threading
import time
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from lancequeue.bench.latency import latency_summary_ms
from lancequeue.bench.records import DEFAULT_SEED, DEFAULT_TEXT_BYTES, make_records
from lancequeue.bench.result import write_result
from lancequeue.common.codec import encode_record
from lancequeue.common.keys import TableKeys
from lancequeue.common.protocol import ENQUEUE_SCRIPT
from lancequeue.common.redis_client import sync_client
from lancequeue.producer.async_producer import AsyncProducer
from lancequeue.producer.producer import Producer
from lancequeue.producer.results import WriteResult

READY_LINE = "ready"
"""What the process prints once its records are generated and its producer is connected."""
GO_LINE = "go"
"""What the benchmark writes to its stdin to start the clock."""
DEFAULT_CHUNK_RECORDS = 256
"""Records per ``enqueue_many`` call unless told otherwise."""
PATTERNS = ("many", "loop", "async-loop")
"""How a producer process calls: ``enqueue_many`` in chunks, or a plain loop of ``enqueue``
(sync, or awaited on an asyncio ``AsyncProducer``)."""
TIMED_EVERY = 16
"""One record in this many has its ack latency timed (a clock read and a done-callback each):
timing every record cost the asyncio loop a quarter to a third more CPU a record than the loop
itself, and ``enqueue_many`` a tenth to a fifth, which is what the producer mode reports."""
_CLOSE_TIMEOUT_S = 10.0
_BACKLOG_POLL_S = 0.02


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m lancequeue.bench.producer_load", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--table", required=True)
    parser.add_argument("--redis", required=True, help="Redis URL.")
    parser.add_argument("--start", type=int, required=True, help="First record id to send.")
    parser.add_argument("--count", type=int, required=True, help="Records to send.")
    parser.add_argument("--dim", type=int, required=True, help="Vector dimension.")
    parser.add_argument("--text-bytes", type=int, default=DEFAULT_TEXT_BYTES)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument(
        "--chunk", type=int, default=DEFAULT_CHUNK_RECORDS, help="Records per enqueue_many."
    )
    parser.add_argument(
        "--rate", type=float, default=0.0, help="Records/s this process sends (0: flat out)."
    )
    parser.add_argument(
        "--pattern", choices=PATTERNS, default="many", help="How the records are enqueued."
    )
    parser.add_argument(
        "--timeout-s", type=float, default=600.0, help="Longest wait for the start or answers."
    )
    parser.add_argument(
        "--producer-options", default="{}", help="JSON object of extra Producer keywords."
    )
    parser.add_argument(
        "--backlog",
        action="store_true",
        help="Send at once, exit once every record is in Redis; wait for no answer.",
    )
    parser.add_argument("--result", type=Path, required=True, help="Where to write the JSON.")
    parser.add_argument("--latencies", type=Path, default=None, help="Where to write the .npy.")
    args = parser.parse_args(argv)
    if args.count < 0 or args.chunk <= 0 or args.rate < 0:
        parser.error("--count must not be negative, --chunk positive, --rate not negative")
    if args.rate and args.pattern != "many":
        parser.error("--rate paces --pattern many only: the loops go flat out")
    options = json.loads(args.producer_options)
    if not isinstance(options, dict):
        parser.error("--producer-options must be a JSON object")
    args.producer_options = options
    return args


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _peak_rss_bytes() -> int:
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss if sys.platform == "darwin" else maxrss * 1024  # Linux reports KiB


def _wait_for_go(timeout_s: float) -> None:
    print(READY_LINE, flush=True)
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(sys.stdin.readline()), daemon=True)
    reader.start()
    reader.join(timeout_s)
    if not line or line[0].strip() != GO_LINE:
        raise RuntimeError("no start signal (the benchmark stopped or timed out)")


class _Timing:
    """When the timed records (one in ``every``) were enqueued and when their futures resolved
    (done-callbacks)."""

    def __init__(self, count: int, every: int = 1) -> None:
        self.every = every
        self.sent_at = np.zeros(count)
        self.resolved_at = np.zeros(count)
        self.all_resolved = threading.Event()  # set once every timed record's callback ran
        self._unresolved = len(range(0, count, every))
        self._lock = threading.Lock()
        if self._unresolved == 0:
            self.all_resolved.set()

    def resolved(self, position: int, _: object) -> None:
        self.resolved_at[position] = time.monotonic()
        with self._lock:
            self._unresolved -= 1
            if self._unresolved == 0:
                self.all_resolved.set()


def _send_loop(producer: Producer, records: list[dict[str, Any]]) -> dict[str, Any]:
    """A plain loop of ``enqueue``, as a user writes it first; wait for no answer."""
    timing = _Timing(len(records), TIMED_EVERY)
    futures: list[concurrent.futures.Future[WriteResult]] = []
    started = time.monotonic()
    for position, record in enumerate(records):
        if position % TIMED_EVERY:
            futures.append(producer.enqueue(record))
            continue
        timing.sent_at[position] = time.monotonic()
        future = producer.enqueue(record)
        future.add_done_callback(partial(timing.resolved, position))
        futures.append(future)
    return _sent(started, futures, timing)


async def _send_async_loop(
    producer: AsyncProducer, records: list[dict[str, Any]], timeout_s: float
) -> dict[str, Any]:
    """A plain loop of ``fut = await producer.enqueue(r)``, then each future awaited in turn."""
    timing = _Timing(len(records), TIMED_EVERY)
    futures: list[asyncio.Future[WriteResult]] = []
    started = time.monotonic()
    for position, record in enumerate(records):
        if position % TIMED_EVERY:
            futures.append(await producer.enqueue(record))
            continue
        timing.sent_at[position] = time.monotonic()
        future = await producer.enqueue(record)
        future.add_done_callback(partial(timing.resolved, position))
        futures.append(future)
    sent = _sent(started, futures, timing)
    deadline = time.monotonic() + timeout_s
    for future in futures:
        left_s = deadline - time.monotonic()
        if left_s <= 0:
            break
        if not future.done():
            await asyncio.wait([future], timeout=left_s)  # not await: it may hold an error
    await asyncio.sleep(0)  # the done-callbacks of the last futures run
    return sent


def _await_in_turn(futures: list[concurrent.futures.Future[WriteResult]], timeout_s: float) -> None:
    """Wait for each future in turn, as a user's loop of ``future.result()`` does (not
    ``concurrent.futures.wait``, which takes every future's lock and hooks a waiter on each)."""
    deadline = time.monotonic() + timeout_s
    for future in futures:
        try:
            future.exception(timeout=max(0.0, deadline - time.monotonic()))
        except concurrent.futures.TimeoutError:
            return


def _answered(futures: list[Any]) -> Any:
    """Which futures are done, as a boolean array."""
    return np.fromiter((future.done() for future in futures), dtype=bool, count=len(futures))


def _sent(started: float, futures: list[Any], timing: _Timing) -> dict[str, Any]:
    return {
        "started": started,
        "enqueued": time.monotonic(),
        "futures": futures,
        "all_resolved": timing.all_resolved,
        "sent_at": timing.sent_at,
        "resolved_at": timing.resolved_at,
        "timed_every": timing.every,
        "max_behind_schedule_ms": 0.0,
    }


def _send(
    producer: Producer, records: list[dict[str, Any]], chunk: int, rate: float
) -> dict[str, Any]:
    """Send every record with ``enqueue_many`` in chunks, paced at ``rate`` records/s if
    positive; wait for no answer."""
    count = len(records)
    timing = _Timing(count, TIMED_EVERY)
    futures: list[concurrent.futures.Future[WriteResult]] = []
    behind_s = 0.0
    started = time.monotonic()
    position = 0
    while position < count:
        now = time.monotonic()
        end = min(count, position + chunk)
        if rate > 0:
            due = min(count, int((now - started) * rate) + 1)
            if due <= position:  # pacing: nothing is due yet
                time.sleep(started + position / rate - now)
                continue
            end = min(end, due)
            behind_s = max(behind_s, now - (started + position / rate))
        timing.sent_at[position:end] = now
        batch = producer.enqueue_many(records[position:end])
        first = -position % TIMED_EVERY  # the chunk's first timed record
        for offset in range(first, len(batch), TIMED_EVERY):
            batch[offset].add_done_callback(partial(timing.resolved, position + offset))
        futures.extend(batch)
        position = end
    return {**_sent(started, futures, timing), "max_behind_schedule_ms": round(behind_s * 1000, 3)}


def _backlog(args: argparse.Namespace, records: list[dict[str, Any]]) -> dict[str, Any]:
    """Send every record with ``enqueue_many`` and return once Redis holds them all (in the
    inbox or the stream), without waiting for any answer."""
    keys = TableKeys(args.table)
    started = time.monotonic()
    deadline = started + args.timeout_s
    producer = Producer(args.table, redis_url=args.redis, **args.producer_options)
    try:
        for position in range(0, len(records), args.chunk):
            producer.enqueue_many(records[position : position + args.chunk], timeout=args.timeout_s)
        with sync_client(args.redis) as client:
            while True:
                held = sum(int(client.get(key) or 0) for key in (keys.inboxed, keys.queued))
                if held >= args.count:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"only {held} of {args.count} records reached Redis")
                time.sleep(_BACKLOG_POLL_S)  # nothing announces a push to a client
    finally:
        producer.close(timeout=0)  # the records' answers are for nobody: fail them here
    return {"count": args.count, "seconds": time.monotonic() - started}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Generate, wait for the start, send, wait for the answers; the result."""
    records = make_records(args.start, args.count, args.dim, args.text_bytes, args.seed)
    if args.backlog:
        return _backlog(args, records)
    encoded_bytes = sum(len(encode_record(record)) for record in records)
    with sync_client(args.redis) as client:
        client.script_load(ENQUEUE_SCRIPT)  # cached before the clock starts, as in steady state
    if args.pattern == "async-loop":
        sent, finished, answered, cpu_window_s = asyncio.run(_run_async(args, records))
    else:
        producer = Producer(args.table, redis_url=args.redis, **args.producer_options)
        try:
            _wait_for_go(args.timeout_s)
            cpu_at_go = _cpu_s()
            if args.pattern == "loop":
                sent = _send_loop(producer, records)
            else:
                sent = _send(producer, records, args.chunk, args.rate)
            deadline = time.monotonic() + args.timeout_s
            _await_in_turn(sent["futures"], args.timeout_s)
            sent["all_resolved"].wait(max(0.0, deadline - time.monotonic()))
            finished = time.monotonic()
            answered = _answered(sent["futures"])  # before close() fails what is left
            cpu_window_s = _cpu_s() - cpu_at_go
        finally:
            producer.close(timeout=_CLOSE_TIMEOUT_S)
    futures: list[Any] = sent["futures"]
    errors: Counter[str] = Counter()
    ok = np.zeros(len(futures), dtype=bool)
    for position, future in enumerate(futures):
        if answered[position]:
            error = future.exception()
            if error is None:
                ok[position] = True
            else:
                errors[type(error).__name__] += 1
    every = sent["timed_every"]
    timed = np.zeros(len(futures), dtype=bool)
    timed[::every] = True
    timed &= sent["resolved_at"] > 0  # a callback not run by the end: no latency to tell
    latencies_s = (sent["resolved_at"] - sent["sent_at"])[ok & timed]
    unanswered = int((~answered).sum())
    if every > 1 or not answered.any():
        last_resolved = finished  # untimed records resolved too: the end of the wait for all
    else:
        last_resolved = float(sent["resolved_at"][answered].max())
    if args.latencies is not None:
        np.save(args.latencies, (latencies_s * 1000).astype(np.float32))
    return {
        "start": args.start,
        "count": args.count,
        "sent": len(futures),
        "ok": int(ok.sum()),
        "errors": dict(errors),
        "unanswered": unanswered,
        "started": sent["started"],
        "enqueued": sent["enqueued"],
        "last_resolved": last_resolved,
        "elapsed_s": last_resolved - sent["started"],
        "encoded_bytes": encoded_bytes,
        "rate": args.rate,
        "max_behind_schedule_ms": sent["max_behind_schedule_ms"],
        "latency": latency_summary_ms(latencies_s),
        "peak_rss_bytes": _peak_rss_bytes(),
        "cpu_s_window": round(cpu_window_s, 3),
        "cpu_s_total": round(_cpu_s(), 3),
    }


async def _run_async(
    args: argparse.Namespace, records: list[dict[str, Any]]
) -> tuple[dict[str, Any], float, Any, float]:
    """``--pattern async-loop``: the send, when it finished, which records were answered, and
    the CPU seconds it took."""
    async with AsyncProducer(args.table, redis_url=args.redis, **args.producer_options) as made:
        await asyncio.to_thread(_wait_for_go, args.timeout_s)
        cpu_at_go = _cpu_s()
        sent = await _send_async_loop(made, records, args.timeout_s)
        finished = time.monotonic()
        answered = _answered(sent["futures"])
        cpu_window_s = _cpu_s() - cpu_at_go
        await made.close(timeout=_CLOSE_TIMEOUT_S)
    return sent, finished, answered, cpu_window_s


def main(argv: list[str] | None = None) -> int:
    """Entry point: run, write the JSON result; exit 1 (with ``error`` in it) on failure."""
    args = _parse_args(argv)
    return write_result(args.result, lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
