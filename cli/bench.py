"""``lancequeue bench``: lancequeue end to end on generated records, optionally next to three
single-process baselines on the same records, or at several record counts."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from types import FrameType
from typing import Any

import click

from lancequeue.bench.chart import write_chart
from lancequeue.bench.drain import drain_table, split_table
from lancequeue.bench.report import (
    baseline_notes,
    end_to_end_lines,
    pattern_table,
    storage_lines,
    sweep_table,
    systems_table,
    write_json,
)
from lancequeue.bench.runner import run_bench
from lancequeue.bench.sampling import require_psutil
from lancequeue.bench.settings import PRODUCER_PATTERNS, BenchSettings
from lancequeue.bench.writer_process import writer_flags
from lancequeue.common.errors import LancequeueError

DEFAULTS = BenchSettings()


def _record_counts(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> tuple[int, ...]:
    """``N1,N2,...`` as integers (``--sweep``, ``--drain``)."""
    if not value:
        return ()
    try:
        return tuple(int(part.replace("_", "")) for part in value.split(",") if part.strip())
    except ValueError as exc:
        raise click.BadParameter(f"expected counts like 10000,100000: {value!r}") from exc


def _json_object(ctx: click.Context, param: click.Parameter, value: str) -> dict[str, Any]:
    try:
        options = json.loads(value)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}") from exc
    if not isinstance(options, dict):
        raise click.BadParameter("expected a JSON object of Producer keywords")
    return options


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the code that stops the child processes


@click.command("bench")
@click.option(
    "--producers",
    type=int,
    default=DEFAULTS.producers,
    show_default=True,
    help="Producer processes (K) of the end-to-end run.",
)
@click.option(
    "--records",
    type=int,
    default=DEFAULTS.records,
    show_default=True,
    help="Records (N) in all, split across the producers.",
)
@click.option("--dim", type=int, default=DEFAULTS.dim, show_default=True, help="Vector dimension.")
@click.option(
    "--text-bytes",
    type=int,
    default=DEFAULTS.text_bytes,
    show_default=True,
    help="Length of each record's text.",
)
@click.option(
    "--seed",
    type=int,
    default=DEFAULTS.seed,
    show_default=True,
    help="Seed of the record generator.",
)
@click.option(
    "--max-batch",
    type=int,
    default=DEFAULTS.max_batch,
    show_default=True,
    help="Writer --max-batch; the batch size of baselines (b) and (c) too.",
)
@click.option(
    "--coalesce-ms",
    type=int,
    default=DEFAULTS.coalesce_ms,
    show_default=True,
    help="Writer --coalesce-ms; the window of baseline (b) too.",
)
@click.option(
    "--redis",
    "redis_url",
    default=None,
    help="Use this Redis instead of starting a private redis-server.",
)
@click.option(
    "--compare",
    is_flag=True,
    help="Also run (a) naive add([row]), (b) in-process coalescing, (c) the limit.",
)
@click.option(
    "--naive-records",
    type=int,
    default=DEFAULTS.naive_records,
    show_default=True,
    help="Most records baseline (a) appends one by one.",
)
@click.option(
    "--callers",
    type=int,
    default=DEFAULTS.callers,
    show_default=True,
    help="Concurrent callers of baseline (b).",
)
@click.option(
    "--sweep",
    callback=_record_counts,
    default=None,
    metavar="N1,N2,...",
    help="Run lancequeue alone at each of these record counts.",
)
@click.option(
    "--rate",
    type=float,
    default=DEFAULTS.rate,
    show_default=True,
    help="Records/s all producers send together, paced (0: flat out).",
)
@click.option(
    "--records-per-call",
    type=int,
    default=DEFAULTS.records_per_call,
    show_default=True,
    help="Records per Producer.enqueue_many call.",
)
@click.option(
    "--producer-pattern",
    type=click.Choice(PRODUCER_PATTERNS),
    default=DEFAULTS.producer_pattern,
    show_default=True,
    help="How each producer calls: enqueue_many of --records-per-call, or a plain loop of "
    "Producer.enqueue (loop) or of await AsyncProducer.enqueue (async-loop).",
)
@click.option(
    "--drain",
    "drain_batches",
    callback=_record_counts,
    default=None,
    metavar="B1,B2,...",
    help="Drain mode: also time the writer alone on a backlog of --records at each of these "
    "--max-batch sizes, next to LanceDB's table.add of the same batches (Arrow and dicts).",
)
@click.option(
    "--producer-mode",
    "pattern_runs",
    type=click.Choice(PRODUCER_PATTERNS),
    multiple=True,
    help="Producer mode: also run one producer process calling this way (repeatable), and "
    "report its CPU per record.",
)
@click.option(
    "--out",
    "out_path",
    type=click.Path(path_type=Path),
    default=DEFAULTS.out_path,
    show_default=True,
    help="JSON report.",
)
@click.option(
    "--chart",
    "chart_path",
    type=click.Path(path_type=Path),
    default=DEFAULTS.chart_path,
    show_default=True,
    help="PNG chart (needs matplotlib).",
)
@click.option(
    "--writer-option",
    "writer_options",
    multiple=True,
    metavar="KEY=VALUE",
    help="Extra writer option, e.g. max-queue-size=8192 (repeatable).",
)
@click.option(
    "--producer-options",
    callback=_json_object,
    default="{}",
    metavar="JSON",
    help="Extra Producer keywords, e.g. '{\"chunk_records\": 512}'.",
)
@click.option("--keep", is_flag=True, help="Keep the temporary directory (tables, logs).")
@click.option(
    "--workdir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Parent of the temporary directory (made if missing). Default: the system's.",
)
@click.option(
    "--sample-ms",
    type=int,
    default=DEFAULTS.sample_ms,
    show_default=True,
    help="RSS and CPU sampling interval.",
)
@click.option(
    "--timeout-s",
    type=float,
    default=DEFAULTS.timeout_s,
    show_default=True,
    help="Longest time one system's run may take.",
)
def bench_command(writer_options: tuple[str, ...], **options: Any) -> None:
    """Measure lancequeue end to end: a private redis-server, the writer, K producer processes
    sending N records; rows/s, MB/s, ack latency, writer memory, CPU per process, batches, and
    a check that the table holds every record exactly once.

    --compare runs, on the same records, (a) one add([row]) per record, (b) an in-process
    coalescing queue with many concurrent callers, (c) appends of pre-built Arrow batches (the
    limit), then lancequeue as (d); each in its own process.
    """
    try:
        settings = BenchSettings(writer_flags=writer_flags(writer_options), **options)
        require_psutil()
    except LancequeueError as exc:
        raise click.UsageError(str(exc)) from exc
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        report = run_bench(settings, click.echo)
    except (LancequeueError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    _print(report, settings)
    write_json(report, settings.out_path)
    click.echo(f"report written to {settings.out_path}")
    click.echo(write_chart(report, settings.chart_path))
    if report["problems"]:
        for problem in report["problems"]:
            click.echo(f"FAILED: {problem}", err=True)
        raise SystemExit(1)


def _print(report: dict[str, Any], settings: BenchSettings) -> None:
    click.echo()
    if report["sweep"]:
        click.echo(sweep_table(report["sweep"]))
        for result in report["sweep"]:
            click.echo()
            click.echo("\n".join(end_to_end_lines(result)))
    else:
        systems = report["systems"]
        click.echo(systems_table(systems))
        if settings.compare:
            click.echo()
            click.echo("\n".join(baseline_notes(systems, settings.records, settings.sample_ms)))
        click.echo()
        click.echo("\n".join(end_to_end_lines(systems["lancequeue"])))
    click.echo()
    click.echo("\n".join(storage_lines(report)))
    if report["drains"]:
        click.echo()
        click.echo("Drain: the writer alone on a backlog (CPU of the process, per row written)")
        click.echo(drain_table(report["drains"]))
        split = split_table(report["drains"])
        if split is not None:
            click.echo()
            click.echo("Where the writer's CPU went, by thread (µs per row written)")
            click.echo(split)
    if report["patterns"]:
        click.echo()
        click.echo("Producer mode: one producer process, CPU per record, the way it calls")
        click.echo(pattern_table(report["patterns"]))
