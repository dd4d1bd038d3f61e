"""Core benchmark: naive per-record LanceDB appends versus lancequeue end to end.

Both systems write the same deterministic records ({"id", "text", "vector"}):

* naive: one child process opens a LanceDB table and calls ``table.add([row])`` once per record
  for the first ``--naive-records`` records (one commit, hence one table version, per record).
* lancequeue: a private ``redis-server`` on a free loopback port, the writer started through the
  real CLI as a subprocess, and ``--producers`` spawned processes, each sending ``--records``
  records with ``Producer.enqueue_many`` in chunks of ``--chunk`` and waiting for every future.
  The clock starts when every producer has passed a start barrier (process start-up, imports and
  record generation are not counted) and stops when the last future resolves.

Peak RSS is sampled with psutil every ``--sample-ms`` ms in both cases (the writer, and the naive
child); the kernel's exact high-water mark (``ru_maxrss``) is reported next to it. Everything is
written under a temporary directory that is removed at the end (``--keep`` keeps it).

Run it where lancequeue is installed (``pip install .``)::

    python benchmarks/core_bench.py --producers 4 --records 5000
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

import numpy as np

TABLE = "bench"
NAIVE_TABLE = "naive"
GEN_BLOCK = 1024  # records are generated in aligned blocks, so any slice is reproducible
WORDS = (
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
    "mike",
    "november",
    "oscar",
    "papa",
    "quebec",
    "romeo",
)
WRITER_START_TIMEOUT_S = 60.0
REDIS_START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 30.0


# -- records ---------------------------------------------------------------------------------


def make_records(seed: int, start: int, count: int, dim: int) -> list[dict[str, Any]]:
    """Records ``start`` .. ``start + count - 1``; record ``i`` is the same in every call."""
    records: list[dict[str, Any]] = []
    index = start
    end = start + count
    while index < end:
        block = index // GEN_BLOCK
        rng = np.random.default_rng([seed, block])
        vectors = rng.standard_normal((GEN_BLOCK, dim), dtype=np.float32)
        words = rng.integers(0, len(WORDS), size=GEN_BLOCK)
        stop = min(end, (block + 1) * GEN_BLOCK)
        for i in range(index, stop):
            offset = i - block * GEN_BLOCK
            records.append(
                {
                    "id": i,
                    "text": f"doc {i} {WORDS[words[offset]]}",
                    "vector": vectors[offset],  # a contiguous float32 row
                }
            )
        index = stop
    return records


def arrow_schema(dim: int) -> Any:
    """The schema the writer infers from these records (all fields nullable)."""
    import pyarrow as pa

    return pa.schema(
        [
            pa.field("id", pa.int64()),
            pa.field("text", pa.string()),
            pa.field("vector", pa.list_(pa.float32(), dim)),
        ]
    )


# -- helpers ---------------------------------------------------------------------------------


def maxrss_mb(kilobytes_or_bytes: int) -> float:
    """``ru_maxrss`` in MB (Linux reports KiB, macOS bytes)."""
    divisor = 1024 * 1024 if sys.platform == "darwin" else 1024
    return kilobytes_or_bytes / divisor


def percentiles_ms(seconds: list[float]) -> dict[str, float | None]:
    if not seconds:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None}
    values = np.asarray(seconds) * 1000
    return {
        "p50_ms": round(float(np.percentile(values, 50)), 3),
        "p99_ms": round(float(np.percentile(values, 99)), 3),
        "max_ms": round(float(values.max()), 3),
    }


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RssSampler:
    """Samples one process's RSS every ``interval_s`` on a thread; keeps the peak."""

    def __init__(self, pid: int, interval_s: float) -> None:
        import psutil

        self._process = psutil.Process(pid)
        self._interval_s = interval_s
        self._stop = threading.Event()
        self.peak_bytes = 0
        self.samples = 0
        self._thread = threading.Thread(target=self._run, name=f"rss-{pid}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                rss = self._process.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                return
            self.peak_bytes = max(self.peak_bytes, rss)
            self.samples += 1
            self._stop.wait(self._interval_s)

    def stop(self) -> float:
        """Stop sampling; the peak in MB."""
        self._stop.set()
        self._thread.join()
        return self.peak_bytes / (1024 * 1024)


def _stop_child(child: mp.process.BaseProcess) -> None:
    """Stop a multiprocessing child: terminate, then kill if it lingers."""
    if child.is_alive():
        child.terminate()
    child.join(10)
    if child.is_alive():
        child.kill()
        child.join()


def reap(proc: subprocess.Popen[bytes], timeout_s: float) -> Any | None:
    """Wait for ``proc`` with ``os.wait4`` (so its exact ``ru_maxrss`` is known); the rusage, or
    None if it did not exit within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        except ChildProcessError:  # already reaped by someone else
            return None
        if pid == proc.pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return usage
        if time.monotonic() > deadline:
            return None
        time.sleep(0.02)


def stop_process(proc: subprocess.Popen[bytes] | None, sig: int, timeout_s: float) -> Any | None:
    """Send ``sig``, wait up to ``timeout_s``, then SIGKILL. The rusage if reaped here."""
    if proc is None or proc.returncode is not None:
        return None
    with suppress(ProcessLookupError):
        proc.send_signal(sig)
    usage = reap(proc, timeout_s)
    if proc.returncode is None:
        with suppress(ProcessLookupError):
            proc.kill()
        usage = reap(proc, 5.0)
        if proc.returncode is None:
            with suppress(subprocess.TimeoutExpired):
                proc.wait(5.0)
    return usage


def tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


def table_stats(db_dir: Path, table: str) -> dict[str, Any]:
    import lancedb

    db = lancedb.connect(str(db_dir))
    tbl = db.open_table(table)
    return {"rows": tbl.count_rows(), "version": tbl.version, "versions": len(tbl.list_versions())}


# -- naive -----------------------------------------------------------------------------------


def naive_child(db_dir: str, count: int, seed: int, dim: int, out: Any) -> None:
    """Child process: one ``table.add([row])`` per record; reports through ``out``."""
    try:
        import lancedb

        records = make_records(seed, 0, count, dim)
        db = lancedb.connect(db_dir)
        tbl = db.create_table(NAIVE_TABLE, schema=arrow_schema(dim))
        durations: list[float] = []
        started = time.perf_counter()
        for record in records:
            before = time.perf_counter()
            tbl.add([record])
            durations.append(time.perf_counter() - before)
        seconds = time.perf_counter() - started
        out.put(
            {
                "ok": True,
                "seconds": seconds,
                "durations": durations,
                "rows": tbl.count_rows(),
                "version": tbl.version,
                "versions": len(tbl.list_versions()),
                "maxrss_mb": maxrss_mb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss),
            }
        )
    except BaseException as exc:
        out.put({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
        raise


def run_naive(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    db_dir = work / "naive-db"
    child = ctx.Process(
        target=naive_child,
        name="naive",
        args=(str(db_dir), args.naive_records, args.seed, args.dim, out),
    )
    child.start()
    sampler = RssSampler(child.pid, args.sample_ms / 1000) if child.pid else None
    try:
        result = _get_result(out, child, args.timeout)
    finally:
        _stop_child(child)
        sampled = sampler.stop() if sampler else None
    if not result.get("ok"):
        raise RuntimeError(f"naive run failed: {result.get('error')}")
    rows = args.naive_records
    return {
        "system": "naive",
        "records": rows,
        "seconds": result["seconds"],
        "rows_per_s": rows / result["seconds"],
        "peak_rss_mb": sampled,
        "maxrss_mb": result["maxrss_mb"],
        "table_rows": result["rows"],
        "table_version": result["version"],
        "versions": result["versions"],
        "latency": percentiles_ms(result["durations"]),
        "db_bytes": dir_size(db_dir),
    }


def _get_result(out: Any, child: Any, timeout_s: float) -> dict[str, Any]:
    import queue

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            result: dict[str, Any] = out.get(timeout=0.5)
            return result
        except queue.Empty:
            if not child.is_alive():
                return {"ok": False, "error": f"{child.name} exited with {child.exitcode}"}
    return {"ok": False, "error": f"{child.name} timed out after {timeout_s}s"}


def dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


# -- lancequeue ------------------------------------------------------------------------------


def producer_child(
    index: int,
    redis_url: str,
    records_per_producer: int,
    chunk: int,
    seed: int,
    dim: int,
    barrier: Any,
    out: Any,
    timeout_s: float,
) -> None:
    """Child process: generate its records, wait at the barrier, enqueue them all in chunks,
    wait for every future; reports timings and per-record ack latencies through ``out``."""
    import concurrent.futures

    import redis

    from lancequeue.common.protocol import ENQUEUE_SCRIPT
    from lancequeue.producer import Producer

    producer = None
    try:
        records = make_records(seed, index * records_per_producer, records_per_producer, dim)
        warm = redis.Redis.from_url(redis_url)
        warm.script_load(ENQUEUE_SCRIPT)  # cached before the clock starts, as in steady state
        warm.close()
        producer = Producer(TABLE, redis_url=redis_url, timeout_ms=int(timeout_s * 1000))
        latencies = [0.0] * len(records)
        resolved_at = [0.0] * len(records)

        def on_done(position: int, sent_at: float) -> Any:
            def callback(_: Any) -> None:
                now = time.monotonic()
                resolved_at[position] = now
                latencies[position] = now - sent_at

            return callback

        barrier.wait(timeout=timeout_s)
        started = time.monotonic()
        futures: list[concurrent.futures.Future[None]] = []
        for first in range(0, len(records), chunk):
            sent_at = time.monotonic()
            batch = producer.enqueue_many(records[first : first + chunk])
            for offset, future in enumerate(batch):
                future.add_done_callback(on_done(first + offset, sent_at))
            futures.extend(batch)
        enqueued = time.monotonic()
        done, not_done = concurrent.futures.wait(futures, timeout=timeout_s)
        finished = time.monotonic()
        errors: dict[str, int] = {}
        for future in done:
            error = future.exception()
            if error is not None:
                name = type(error).__name__
                errors[name] = errors.get(name, 0) + 1
        ok_latencies = [
            latencies[i] for i, f in enumerate(futures) if f in done and f.exception() is None
        ]
        out.put(
            {
                "ok": True,
                "index": index,
                "started": started,
                "enqueued": enqueued,
                "finished": finished,
                "last_resolved": max(resolved_at) if not not_done else finished,
                "sent": len(futures),
                "written": len(ok_latencies),
                "errors": errors,
                "unanswered": len(not_done),
                "latencies": ok_latencies,
                "maxrss_mb": maxrss_mb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss),
            }
        )
    except BaseException as exc:
        with suppress(Exception):
            barrier.abort()
        out.put({"ok": False, "index": index, "error": f"{type(exc).__name__}: {exc}"})
        raise
    finally:
        if producer is not None:
            producer.close(timeout=5)


def start_redis(work: Path) -> tuple[subprocess.Popen[bytes], str]:
    import redis

    from lancequeue.common.embedded_redis import redis_server_binary

    binary = redis_server_binary()
    log = work / "redis.log"
    last_error = ""
    for _ in range(3):  # free_port() can race with another process; retry on a new port
        port = free_port()
        proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(work),
                "--logfile",
                str(log),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"redis://127.0.0.1:{port}"
        client = redis.Redis.from_url(url)
        deadline = time.monotonic() + REDIS_START_TIMEOUT_S
        try:
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    if client.ping():
                        return proc, url
                except redis.ConnectionError as exc:
                    last_error = str(exc)
                time.sleep(0.02)
        finally:
            client.close()
        stop_process(proc, signal.SIGKILL, 5)
    raise RuntimeError(f"redis-server did not start ({last_error}); log:\n{tail(log)}")


def start_writer(
    args: argparse.Namespace, redis_url: str, db_dir: Path, log: Path
) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-c",
        "from lancequeue.common.cli import main; main()",
        "writer",
        "--redis",
        redis_url,
        "--db",
        str(db_dir),
        "--table",
        TABLE,
        "--max-batch",
        str(args.max_batch),
        "--coalesce-ms",
        str(args.coalesce_ms),
    ]
    if args.max_queue_size is not None:
        command += ["--max-queue-size", str(args.max_queue_size)]
    with open(log, "wb") as log_file:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def wait_writer_ready(proc: subprocess.Popen[bytes], redis_url: str, log: Path) -> None:
    """Until the writer has announced itself as running in its status hash."""
    import redis

    from lancequeue.common.keys import TableKeys

    keys = TableKeys(TABLE)
    client = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + WRITER_START_TIMEOUT_S
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"writer exited with {proc.returncode}; log:\n{tail(log)}")
            if client.hget(keys.writer, "state") == b"running" and client.exists(keys.lease):
                return
            time.sleep(0.05)
    finally:
        client.close()
    raise RuntimeError(f"writer not ready after {WRITER_START_TIMEOUT_S}s; log:\n{tail(log)}")


def run_lancequeue(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    db_dir = work / "lancequeue-db"
    writer_log = work / "writer.log"
    redis_proc: subprocess.Popen[bytes] | None = None
    writer: subprocess.Popen[bytes] | None = None
    writer_sampler: RssSampler | None = None
    redis_sampler: RssSampler | None = None
    producers: list[Any] = []
    writer_usage = None
    writer_peak = redis_peak = None
    try:
        redis_proc, redis_url = start_redis(work)
        redis_sampler = RssSampler(redis_proc.pid, args.sample_ms / 1000)
        writer = start_writer(args, redis_url, db_dir, writer_log)
        writer_sampler = RssSampler(writer.pid, args.sample_ms / 1000)
        wait_writer_ready(writer, redis_url, writer_log)
        rss_idle_mb = writer_sampler.peak_bytes / (1024 * 1024)

        out = ctx.Queue()
        barrier = ctx.Barrier(args.producers + 1)
        for index in range(args.producers):
            child = ctx.Process(
                target=producer_child,
                name=f"producer-{index}",
                args=(
                    index,
                    redis_url,
                    args.records,
                    args.chunk,
                    args.seed,
                    args.dim,
                    barrier,
                    out,
                    args.timeout,
                ),
            )
            child.start()
            producers.append(child)
        # A broken barrier means a producer failed before the start; its report says why.
        with suppress(threading.BrokenBarrierError):
            barrier.wait(timeout=args.timeout)

        reports = []
        for child in producers:
            report = _get_result(out, child, args.timeout)
            reports.append(report)
            if not report.get("ok"):
                raise RuntimeError(f"producer failed: {report.get('error')}")
        for child in producers:
            child.join(30)

        writer_usage = stop_process(writer, signal.SIGTERM, STOP_TIMEOUT_S)
        writer_exit = writer.returncode
        writer_peak = writer_sampler.stop()
        writer_sampler = None
    finally:
        for child in producers:
            _stop_child(child)
        if writer is not None and writer.returncode is None:
            stop_process(writer, signal.SIGTERM, STOP_TIMEOUT_S)
        if writer_sampler is not None:
            writer_sampler.stop()
        if redis_proc is not None:
            stop_process(redis_proc, signal.SIGKILL, 5)
        if redis_sampler is not None:
            redis_peak = redis_sampler.stop()

    started = min(r["started"] for r in reports)
    last = max(r["last_resolved"] for r in reports)
    seconds = last - started
    total = args.producers * args.records
    written = sum(r["written"] for r in reports)
    errors: dict[str, int] = {}
    for report in reports:
        for name, count in report["errors"].items():
            errors[name] = errors.get(name, 0) + count
    latencies = [value for r in reports for value in r["latencies"]]
    stats = table_stats(db_dir, TABLE)
    return {
        "system": "lancequeue",
        "records": total,
        "seconds": seconds,
        "rows_per_s": total / seconds,
        "peak_rss_mb": writer_peak,
        "maxrss_mb": maxrss_mb(writer_usage.ru_maxrss) if writer_usage is not None else None,
        "table_rows": stats["rows"],
        "table_version": stats["version"],
        "versions": stats["versions"],
        "latency": percentiles_ms(latencies),
        "db_bytes": dir_size(db_dir),
        "written_ok": written,
        "errors": errors,
        "unanswered": sum(r["unanswered"] for r in reports),
        "writer_exit_code": writer_exit,
        "writer_idle_rss_mb": rss_idle_mb,
        "redis_peak_rss_mb": redis_peak,
        "producer_maxrss_mb": [r["maxrss_mb"] for r in reports],
        "enqueue_seconds": max(r["enqueued"] for r in reports) - started,
    }


# -- report ----------------------------------------------------------------------------------


def fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_table(results: list[dict[str, Any]]) -> None:
    header = (
        "system",
        "records",
        "seconds",
        "rows/s",
        "peak RSS MB",
        "maxrss MB",
        "versions",
        "p50 ms",
        "p99 ms",
    )
    rows = [
        (
            r["system"],
            str(r["records"]),
            fmt(r["seconds"], ".2f"),
            fmt(r["rows_per_s"], ",.0f"),
            fmt(r["peak_rss_mb"], ".0f"),
            fmt(r["maxrss_mb"], ".0f"),
            str(r["versions"]),
            fmt(r["latency"]["p50_ms"], ".1f"),
            fmt(r["latency"]["p99_ms"], ".1f"),
        )
        for r in results
    ]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    line = "  ".join(
        h.ljust(w) if i == 0 else h.rjust(w)
        for i, (h, w) in enumerate(zip(header, widths, strict=True))
    )
    print(line)
    print("-" * len(line))
    for row in rows:
        print(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Naive per-record LanceDB appends vs lancequeue end to end, on the same "
        "records.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--naive-records",
        type=int,
        default=2000,
        help="Records the naive baseline appends one by one (0 skips it).",
    )
    parser.add_argument("--producers", type=int, default=4, help="Producer processes (K).")
    parser.add_argument(
        "--records", type=int, default=5000, help="Records per producer (N); K*N in all."
    )
    parser.add_argument(
        "--chunk", type=int, default=256, help="Records per Producer.enqueue_many call."
    )
    parser.add_argument("--dim", type=int, default=384, help="Vector dimension.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the record generator.")
    parser.add_argument("--max-batch", type=int, default=128, help="Writer --max-batch.")
    parser.add_argument("--coalesce-ms", type=int, default=100, help="Writer --coalesce-ms.")
    parser.add_argument(
        "--max-queue-size",
        type=int,
        default=None,
        help="Writer --max-queue-size; None keeps the writer's own default.",
    )
    parser.add_argument(
        "--sample-ms", type=float, default=50.0, help="RSS sampling interval (psutil)."
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        help="Seconds any one phase may take before the run is aborted.",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=Path("bench-out/core_bench.json"),
        help="Where to write the results as JSON.",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="Parent of the temporary data directory; None is the system's.",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="Keep the temporary data directory (its path is printed).",
    )
    args = parser.parse_args(argv)
    for name in ("producers", "records", "chunk", "dim", "max_batch", "coalesce_ms"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    if args.naive_records < 0:
        parser.error("--naive-records must not be negative")
    return args


def _raise_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # run the finally blocks that stop the child processes


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    work = Path(tempfile.mkdtemp(prefix="lancequeue-bench-", dir=args.workdir))
    results: list[dict[str, Any]] = []
    try:
        if args.naive_records:
            print(f"naive: {args.naive_records} x table.add([row]) ...", flush=True)
            results.append(run_naive(args, work))
        print(
            f"lancequeue: {args.producers} producers x {args.records} records "
            f"(chunk {args.chunk}, max-batch {args.max_batch}, "
            f"coalesce {args.coalesce_ms} ms) ...",
            flush=True,
        )
        results.append(run_lancequeue(args, work))
    finally:
        if args.keep:
            print(f"data kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    print()
    print_table(results)
    by_system = {r["system"]: r for r in results}
    ratio = None
    if "naive" in by_system:
        ratio = by_system["lancequeue"]["rows_per_s"] / by_system["naive"]["rows_per_s"]
        print(f"\nlancequeue / naive rows/s: {ratio:.1f}x")
    lq = by_system["lancequeue"]
    problems = []
    if lq["table_rows"] != lq["records"]:
        problems.append(f"table holds {lq['table_rows']} rows, expected {lq['records']}")
    if lq["errors"] or lq["unanswered"]:
        problems.append(f"errors {lq['errors']}, unanswered {lq['unanswered']}")
    if lq["writer_exit_code"] != 0:
        problems.append(f"writer exited with {lq['writer_exit_code']}")
    for problem in problems:
        print(f"WARNING: {problem}")

    report = {
        "config": {
            key: str(value) if isinstance(value, Path) else value
            for key, value in vars(args).items()
        },
        "host": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
        "results": results,
        "ratio_rows_per_s": ratio,
        "problems": problems,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"results written to {args.json}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
