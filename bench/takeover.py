"""How fast a standby writer takes a table over, and whether anything is lost or doubled.

Each round starts Redis, a writer and a standby writer (real ``lancequeue writer`` processes), has
a producer write one record every few milliseconds, then either kills the serving writer
(``SIGKILL``) or freezes it (``SIGSTOP``, later ``SIGCONT``). It reports the time from the fault
until the standby holds the lease and until the next record is acknowledged, the frozen writer's
exit status once resumed, and the table's duplicates and losses.

    python -m lancequeue.bench.takeover --rounds 3 --lease-ms 4000
"""

from __future__ import annotations

import argparse
import collections
import functools
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from lancequeue.bench.processes import stop_process, tail
from lancequeue.bench.redis_server import start_redis

TABLE = "takeover"


def start_writer(redis_url: str, db: Path, log: Path, lease_ms: int) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-c", "from lancequeue.cli import main; main()", "-v"]
    command += ["writer", "--redis", redis_url, "--db", str(db), "--table", TABLE]
    command += ["--coalesce-ms", "10", "--lease-ms", str(lease_ms)]
    with open(log, "wb") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)


def wait(condition: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.01)
    raise RuntimeError(f"timed out waiting for {what}")


def one_round(fault: str, lease_ms: int, work: Path) -> dict[str, Any]:
    import lancedb
    import redis

    from lancequeue.common.keys import TableKeys
    from lancequeue.producer import Producer

    keys = TableKeys(TABLE)
    redis_proc, url = start_redis(work)
    client = redis.Redis.from_url(url)
    db = work / "db"
    first = start_writer(url, db, work / "first.log", lease_ms)
    second: subprocess.Popen[bytes] | None = None
    acked: list[tuple[int, float]] = []
    failed: list[tuple[int, float]] = []
    stop = threading.Event()
    producer = Producer(TABLE, redis_url=url, timeout_ms=60_000)

    def settled(i: int, future: Future[None]) -> None:
        (failed if future.exception() else acked).append((i, time.monotonic()))

    def produce() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            future = producer.enqueue({"id": i, "text": f"record {i}"})
            future.add_done_callback(functools.partial(settled, i))
            time.sleep(0.005)

    try:
        wait(lambda: client.exists(keys.lease), 60, "the first writer")
        holder = client.get(keys.lease)
        second = start_writer(url, db, work / "second.log", lease_ms)
        wait(lambda: b"standing by" in (work / "second.log").read_bytes(), 60, "the standby")
        thread = threading.Thread(target=produce)
        thread.start()
        wait(lambda: len(acked) > 200, 60, "records to flow")
        fault_at = time.monotonic()
        first.send_signal(signal.SIGKILL if fault == "kill -9" else signal.SIGSTOP)
        wait(lambda: client.get(keys.lease) not in (holder, None), 60, "the takeover")
        took_over_s = time.monotonic() - fault_at
        wait(lambda: any(t > fault_at + took_over_s for _, t in acked), 60, "a write after it")
        first_ack_s = min(t for _, t in acked if t > fault_at) - fault_at
        old_exit = None
        if fault == "SIGSTOP":
            first.send_signal(signal.SIGCONT)
            old_exit = first.wait(60)
        time.sleep(0.5)
        stop.set()
        thread.join()
        producer.close()
        ids = lancedb.connect(str(db)).open_table(TABLE).to_arrow().column("id").to_pylist()
        counts = collections.Counter(ids)
        ok = {i for i, _ in acked}
        return {
            "fault": fault,
            "lease_ms": lease_ms,
            "takeover_s": took_over_s,
            "first_ack_after_fault_s": first_ack_s,
            "old_writer_exit": old_exit,
            "sent": len(ok) + len(failed),
            "acknowledged": len(ok),
            "duplicates": sum(n - 1 for n in counts.values() if n > 1),
            "lost": len(ok - set(counts)),
            "errors_in_table": len({i for i, _ in failed} & set(counts)),
        }
    except Exception:
        print(tail(work / "first.log"), tail(work / "second.log"), sep="\n---\n")
        raise
    finally:
        stop.set()
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                stop_process(proc, signal.SIGKILL, 10)
        client.close()
        stop_process(redis_proc, signal.SIGKILL, 10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="Rounds per fault.")
    parser.add_argument("--lease-ms", type=int, default=4000, help="Writer --lease-ms.")
    args = parser.parse_args()
    rows = []
    for fault in ("kill -9", "SIGSTOP"):
        for _ in range(args.rounds):
            with tempfile.TemporaryDirectory() as work:
                rows.append(one_round(fault, args.lease_ms, Path(work)))
    columns = list(rows[0])
    print("  ".join(f"{c:>12}" for c in columns))
    for row in rows:
        cells = [f"{v:.2f}" if isinstance(v, float) else str(v) for v in row.values()]
        print("  ".join(f"{c:>12}" for c in cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
