"""The drain mode: the writer timed alone on a backlog, next to LanceDB's own ``table.add`` of the
same rows in batches of the same size.

The writer starts (private Redis, ``--max-batch B``), and once it serves the table it is
stopped with SIGSTOP. One producer process then leaves every record in Redis and exits
(``producer_load --backlog``): the producers are gone. The writer gets SIGCONT and the clock runs
until its status hash counts every row written; its CPU is read from the kernel at both ends
(a stopped process spends none), so start-up, imports and the backlog's sending are not
counted. Then baseline (c) appends the same records in batches of B in a process of its own,
once as Arrow and once as the dicts themselves.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import redis

from lancequeue.bench.baselines import run_baseline
from lancequeue.bench.errors import BenchError
from lancequeue.bench.processes import Children, reap, start_process, stop_process, tail
from lancequeue.bench.producer_processes import LOAD_MODULE
from lancequeue.bench.redis_server import start_redis
from lancequeue.bench.sampling import require_psutil
from lancequeue.bench.settings import TABLE, BenchSettings
from lancequeue.bench.table_stats import check_ids
from lancequeue.bench.thread_cpu import GROUPS, split_cpu, thread_times
from lancequeue.bench.writer_process import start_writer, wait_writer_ready
from lancequeue.common.keys import TableKeys

_POLL_S = 0.005
"""How often the writer's row count is read while it drains (the clock's resolution)."""
_STOPPED_LEASE_MS = 3_600_000
"""The drain writer's lease: long enough to outlast the time it is stopped."""


def run_drain(settings: BenchSettings, batch: int, work: Path) -> dict[str, Any]:
    """The writer draining ``settings.records`` records at ``--max-batch batch``, then LanceDB's
    ``table.add`` of the same records in batches of ``batch``, as Arrow and as dicts."""
    work.mkdir(parents=True, exist_ok=True)
    writer = _drain_writer(settings, batch, work / "lancequeue")
    sized = dataclasses.replace(settings, max_batch=batch)
    arrow = run_baseline("limit", sized, work / "arrow")
    dicts = run_baseline("dicts", sized, work / "dicts")
    return {"batch": batch, "lancequeue": writer, "arrow": arrow, "dicts": dicts}


def _drain_writer(settings: BenchSettings, batch: int, work: Path) -> dict[str, Any]:
    psutil = require_psutil()
    work.mkdir(parents=True, exist_ok=True)
    records = settings.records
    flags = (
        *settings.writer_flags,
        *("--max-queue-size", str(max(records, batch))),
        *("--lease-ms", str(_STOPPED_LEASE_MS)),
    )
    with Children() as children:
        redis_process, redis_url = start_redis(work)
        children.add(redis_process)
        client = redis.Redis.from_url(redis_url)
        log = work / "writer.log"
        writer = children.add(
            start_writer(redis_url, work / "db", TABLE, batch, settings.coalesce_ms, flags, log)
        )
        wait_writer_ready(writer, client, TABLE, log)
        os.kill(writer.pid, signal.SIGSTOP)
        try:
            sent_s = _send_backlog(settings, redis_url, batch, work, children)
            cpu = psutil.Process(writer.pid).cpu_times()
            cpu_before = cpu.user + cpu.system
            threads_before = thread_times(writer.pid)
        finally:
            os.kill(writer.pid, signal.SIGCONT)
        started = time.monotonic()
        deadline = started + settings.timeout_s
        status = TableKeys(TABLE).writer
        while int(client.hget(status, "rows") or 0) < records:
            if writer.poll() is not None:
                raise BenchError(f"drain writer exited with {writer.returncode}:\n{tail(log)}")
            if time.monotonic() > deadline:
                raise BenchError(f"drain writer not done after {settings.timeout_s}s")
            time.sleep(_POLL_S)  # the status hash is the writer's only word on its progress
        seconds = time.monotonic() - started
        cpu = psutil.Process(writer.pid).cpu_times()
        threads_after = thread_times(writer.pid)
        cpu_s = cpu.user + cpu.system - cpu_before
        batches = int(client.hget(status, "batches") or 0)
        append_ms = int(client.hget(status, "append_ms") or 0)
        client.close()
        stop_process(writer, signal.SIGTERM)
    return {
        "records": records,
        "batch": batch,
        "backlog_sent_s": sent_s,
        "seconds": seconds,
        "rows_per_s": records / seconds,
        "cpu_s_window": cpu_s,
        "cpu_split_s": split_cpu(writer.pid, threads_before, threads_after, cpu_s),
        "batches": batches,
        "mean_append_ms": append_ms / batches if batches else None,
        "writer_exit_code": writer.returncode,
        "check": check_ids(work / "db", TABLE, records),
    }


def _send_backlog(
    settings: BenchSettings, redis_url: str, batch: int, work: Path, children: Children
) -> float:
    """One ``producer_load --backlog`` process leaves every record in Redis; how long it took."""
    log = work / "backlog.log"
    command = [sys.executable, "-m", LOAD_MODULE, "--backlog", "--table", TABLE]
    command += ["--redis", redis_url, "--start", "0", "--count", str(settings.records)]
    command += ["--dim", str(settings.dim), "--text-bytes", str(settings.text_bytes)]
    command += ["--seed", str(settings.seed), "--chunk", str(settings.records_per_call)]
    command += ["--timeout-s", repr(settings.timeout_s), "--result", str(work / "backlog.json")]
    started = time.monotonic()
    process = children.add(start_process(command, log))
    reap(process, settings.timeout_s)
    if process.returncode != 0:
        raise BenchError(f"backlog producer exited with {process.returncode}:\n{tail(log)}")
    return time.monotonic() - started


def drain_problems(result: dict[str, Any]) -> list[str]:
    """What makes a drain run untrustworthy: rows not written exactly once, an unclean exit."""
    writer = result["lancequeue"]
    problems = []
    if not writer["check"]["ok"]:
        problems.append(f"drain at batch {result['batch']}: table check failed {writer['check']}")
    if writer["writer_exit_code"] != 0:
        problems.append(
            f"drain at batch {result['batch']}: writer exited {writer['writer_exit_code']}"
        )
    return problems


def drain_table(drains: list[dict[str, Any]]) -> str:
    """One row per batch size: the writer's rows/s and CPU per row against ``table.add``'s."""
    lines = [
        "| batch | writer rows/s | writer CPU µs/row | add(dicts) rows/s, µs/row "
        "| add(Arrow) rows/s, µs/row | writer vs dicts: rows/s, CPU |",
        "|---|---|---|---|---|---|",
    ]
    for drain in drains:
        ours, dicts, arrow = drain["lancequeue"], drain["dicts"], drain["arrow"]
        us = _us_per_row(ours)
        lines.append(
            f"| {drain['batch']} | {ours['rows_per_s']:,.0f} | {us:,.1f} "
            f"| {dicts['rows_per_s']:,.0f}, {_us_per_row(dicts):,.1f} "
            f"| {arrow['rows_per_s']:,.0f}, {_us_per_row(arrow):,.1f} "
            f"| {ours['rows_per_s'] / dicts['rows_per_s']:.2f}x, "
            f"{us / _us_per_row(dicts):.2f}x |"
        )
    return "\n".join(lines)


def split_table(drains: list[dict[str, Any]]) -> str | None:
    """One row per batch size: the writer's CPU per row by thread (``thread_cpu``); None
    where the system does not say."""
    if any(drain["lancequeue"].get("cpu_split_s") is None for drain in drains):
        return None
    lines = [f"| batch | {' | '.join(GROUPS)} |", "|---" * (len(GROUPS) + 1) + "|"]
    for drain in drains:
        ours = drain["lancequeue"]
        cells = [
            f"{seconds / int(ours['records']) * 1e6:,.1f}"
            for seconds in (ours["cpu_split_s"][group] for group in GROUPS)
        ]
        lines.append(f"| {drain['batch']} | {' | '.join(cells)} |")
    return "\n".join(lines)


def _us_per_row(result: dict[str, Any]) -> float:
    return float(result["cpu_s_window"]) / int(result["records"]) * 1e6
