"""One benchmark invocation: which systems run, in which order, in which directory, and what
counts as a failed run."""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lancequeue.bench.baselines import baseline_records, run_baseline
from lancequeue.bench.drain import drain_problems, run_drain
from lancequeue.bench.end_to_end import run_end_to_end
from lancequeue.bench.machine import machine_facts
from lancequeue.bench.report import LABELS
from lancequeue.bench.settings import TABLE, BenchSettings
from lancequeue.bench.storage_shape import measure_storage
from lancequeue.bench.table_stats import dataset_path

BASELINES = ("naive", "in_process", "limit")
"""The baselines of ``--compare``, in the order they run: (a), (b), (c)."""

Say = Callable[[str], None]


def end_to_end_problems(result: dict[str, Any]) -> list[str]:
    """What makes an end-to-end run untrustworthy: records not written exactly once, errors,
    unanswered records, a writer that did not exit cleanly."""
    problems: list[str] = []
    check = result["check"]
    if not check["ok"]:
        problems.append(
            f"table holds {check['rows']} rows for {check['expected_rows']} records sent: "
            f"{check['duplicates']} duplicates, {check['missing']} missing, "
            f"{check['unexpected']} unexpected ids"
        )
    if result["errors"]:
        problems.append(f"records failed: {result['errors']}")
    if result["unanswered"]:
        problems.append(f"{result['unanswered']} records unanswered")
    if result["writer_exit_code"] != 0:
        problems.append(f"the writer exited with {result['writer_exit_code']}")
    return [f"lancequeue ({result['records']} records): {problem}" for problem in problems]


def _baseline_problems(result: dict[str, Any], expected: int) -> list[str]:
    if result["table_rows"] != expected:
        return [f"{result['system']}: table holds {result['table_rows']} rows, not {expected}"]
    return []


def _describe_run(settings: BenchSettings, records: int) -> str:
    pace = f"{settings.rate:,.0f} records/s" if settings.rate else "flat out"
    calls = {
        "many": f"enqueue_many of {settings.records_per_call}",
        "loop": "a plain loop of Producer.enqueue",
        "async-loop": "a plain loop of await AsyncProducer.enqueue",
    }[settings.producer_pattern]
    return (
        f"(d) lancequeue: {settings.producers} producers ({calls}), {records:,} records "
        f"(dim {settings.dim}, {pace}), writer --max-batch {settings.max_batch} "
        f"--coalesce-ms {' '.join((str(settings.coalesce_ms), *settings.writer_flags))} ..."
    )


def _add_storage(
    result: dict[str, Any], run_dir: Path, table: str, settings: BenchSettings, say: Say
) -> None:
    """Measure the storage shape of the table a run left in ``run_dir`` (every system keeps
    its database in ``<run dir>/db``), once its processes have exited."""
    say(
        f"{LABELS[result['system']]}: storage shape of its {result['table_rows']:,}-row table "
        "and of a compacted copy ..."
    )
    uri = dataset_path(run_dir / "db", table)
    result["storage"] = measure_storage(uri, run_dir / "compacted", settings.dim, settings.seed)


def _run_modes(settings: BenchSettings, work: Path, say: Say) -> dict[str, Any]:
    """The drain mode and the producer mode, each asked for; before the other runs."""
    drains: list[dict[str, Any]] = []
    patterns: list[dict[str, Any]] = []
    problems: list[str] = []
    for batch in settings.drain_batches:
        say(
            f"drain: the writer alone on a backlog of {settings.records:,} records at "
            f"--max-batch {batch}, then table.add of the same batches (Arrow, dicts) ..."
        )
        drain = run_drain(settings, batch, work / f"drain-{batch}")
        drains.append(drain)
        problems += drain_problems(drain)
    for pattern in settings.pattern_runs:
        one = dataclasses.replace(settings, producers=1, producer_pattern=pattern, rate=0.0)
        say(f"producer mode: {_describe_run(one, settings.records)}")
        result = run_end_to_end(one, settings.records, work / f"pattern-{pattern}")
        result["pattern"] = pattern
        patterns.append(result)
        problems += end_to_end_problems(result)
    return {"drains": drains, "patterns": patterns, "problems": problems}


def _run_systems(settings: BenchSettings, work: Path, say: Say) -> dict[str, Any]:
    modes = _run_modes(settings, work, say)
    systems: dict[str, Any] = {}
    sweep: list[dict[str, Any]] = []
    problems: list[str] = modes.pop("problems")
    if settings.sweep:
        for records in settings.sweep:
            say(_describe_run(settings, records))
            run_dir = work / f"lancequeue-{records}"
            result = run_end_to_end(settings, records, run_dir)
            sweep.append(result)
            problems += end_to_end_problems(result)
            _add_storage(result, run_dir, result["table"], settings, say)
            if not settings.keep:  # a large sweep's tables need not all fit on disk at once
                shutil.rmtree(run_dir, ignore_errors=True)
        return {"systems": systems, "sweep": sweep, **modes, "problems": problems}
    if settings.compare:
        for system in BASELINES:
            count = baseline_records(system, settings)
            say(f"({'abc'[BASELINES.index(system)]}) {system}: {count:,} records ...")
            result = run_baseline(system, settings, work / system)
            systems[system] = result
            problems += _baseline_problems(result, count)
    say(_describe_run(settings, settings.records))
    systems["lancequeue"] = result = run_end_to_end(settings, settings.records, work / "lancequeue")
    problems += end_to_end_problems(result)
    # Read once every system has run, so no reading overlaps a timed run.
    if settings.compare:
        _add_storage(systems["naive"], work / "naive", TABLE, settings, say)
    _add_storage(result, work / "lancequeue", result["table"], settings, say)
    return {"systems": systems, "sweep": sweep, **modes, "problems": problems}


def run_bench(settings: BenchSettings, say: Say) -> dict[str, Any]:
    """Run every system ``settings`` asks for, in a temporary directory removed at the end
    (unless ``keep``); the whole report: parameters, machine, per-system figures, problems."""
    machine = machine_facts()
    if settings.workdir is not None:
        settings.workdir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="lancequeue-bench-", dir=settings.workdir))
    try:
        outcome = _run_systems(settings, work, say)
    finally:
        if settings.keep:
            say(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    runs = [*outcome["systems"].values(), *outcome["sweep"], *outcome["patterns"]]
    machine["redis_server"] = next((r["redis_version"] for r in runs if "redis_version" in r), None)
    return {"parameters": settings.parameters(), "machine": machine, **outcome}
