"""The producers of the end-to-end run: ``python -m lancequeue.bench.producer_load`` children
held at a start barrier (each says ``ready`` on stdout, all get ``go`` on stdin at once)."""

from __future__ import annotations

import json
import select
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lancequeue.bench.errors import BenchError
from lancequeue.bench.processes import Children, Process, guarded, tail
from lancequeue.bench.records import share
from lancequeue.bench.settings import PROCESS_START_TIMEOUT_S, BenchSettings

LOAD_MODULE = "lancequeue.bench.producer_load"
"""The module each producer process runs."""
_READY = b"ready"  # lancequeue.bench.producer_load's READY_LINE
_GO = b"go\n"  # lancequeue.bench.producer_load's GO_LINE
_EXIT_GRACE_S = 30.0  # beyond the producer's own answer timeout, for closing and writing out


@dataclass(frozen=True)
class ProducerProcess:
    """One producer child and the files it writes."""

    index: int
    process: Process
    result: Path
    latencies: Path
    log: Path


def start_producers(
    settings: BenchSettings,
    redis_url: str,
    table: str,
    records: int,
    work: Path,
    children: Children,
) -> list[ProducerProcess]:
    """Start ``settings.producers`` processes sending ``records`` records in all."""
    started: list[ProducerProcess] = []
    for index in range(settings.producers):
        start, count = share(records, settings.producers, index)
        rate = settings.rate * count / records if settings.rate else 0.0
        result = work / f"producer-{index}.json"
        latencies = work / f"producer-{index}-latencies.npy"
        log = work / f"producer-{index}.log"
        command = [sys.executable, "-m", LOAD_MODULE, "--table", table, "--redis", redis_url]
        command += ["--start", str(start), "--count", str(count), "--dim", str(settings.dim)]
        command += ["--text-bytes", str(settings.text_bytes), "--seed", str(settings.seed)]
        command += ["--chunk", str(settings.records_per_call), "--rate", repr(rate)]
        command += ["--pattern", settings.producer_pattern]
        command += ["--timeout-s", repr(settings.timeout_s)]
        command += ["--producer-options", json.dumps(settings.producer_options)]
        command += ["--result", str(result), "--latencies", str(latencies)]
        with open(log, "ab") as log_file:
            process = subprocess.Popen(
                guarded(command),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log_file,
                start_new_session=True,  # Ctrl-C reaches the benchmark, which stops them
            )
        children.add(process)
        started.append(ProducerProcess(index, process, result, latencies, log))
    return started


def _failure(producer: ProducerProcess, what: str) -> BenchError:
    detail = ""
    if producer.result.exists():
        detail = json.loads(producer.result.read_text()).get("error", "")
    return BenchError(
        f"producer {producer.index} {what}: {detail or 'see its log'}\n{tail(producer.log)}"
    )


def wait_ready(producers: list[ProducerProcess]) -> None:
    """Until every producer said ``ready``; raises :class:`BenchError` if one exits first or
    takes longer than ``PROCESS_START_TIMEOUT_S``."""
    deadline = time.monotonic() + PROCESS_START_TIMEOUT_S
    for producer in producers:
        stdout = producer.process.stdout
        assert stdout is not None
        readable, _, _ = select.select([stdout], [], [], max(0.0, deadline - time.monotonic()))
        if not readable:
            raise _failure(producer, f"not ready after {PROCESS_START_TIMEOUT_S}s")
        if stdout.readline().strip() != _READY:
            producer.process.wait(_EXIT_GRACE_S)
            raise _failure(producer, f"exited with {producer.process.returncode} before the start")


def release(producers: list[ProducerProcess]) -> float:
    """Let every producer start; the ``time.monotonic()`` of the release."""
    released_at = time.monotonic()
    for producer in producers:
        stdin = producer.process.stdin
        assert stdin is not None
        stdin.write(_GO)
        stdin.close()
    return released_at


def collect(producers: list[ProducerProcess], timeout_s: float) -> list[dict[str, Any]]:
    """Wait for every producer to exit; their results, each with its ``latencies_ms`` array."""
    deadline = time.monotonic() + timeout_s + _EXIT_GRACE_S
    results: list[dict[str, Any]] = []
    for producer in producers:
        try:
            producer.process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired as exc:
            raise _failure(producer, "did not finish in time") from exc
        if producer.process.stdout is not None:
            producer.process.stdout.close()
        if producer.process.returncode != 0 or not producer.result.exists():
            raise _failure(producer, f"exited with {producer.process.returncode}")
        result: dict[str, Any] = json.loads(producer.result.read_text())
        result["latencies_ms"] = np.load(producer.latencies)
        results.append(result)
    return results
