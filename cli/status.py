"""``lancequeue status``: a table's queue, its writer and its progress, as a table or JSON."""

from __future__ import annotations

import contextlib
import io
import json
import sys
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from lancequeue.cli.options import connection_options_any_table
from lancequeue.common.connection import resolve_redis_url
from lancequeue.common.redis_client import COMMAND_FAILURES, REDIS_FAILURES, SyncRedis, sync_client
from lancequeue.common.status import known_tables, read_status


def tables_table(statuses: list[dict[str, Any]]) -> Table:
    """One line per table: its queue, its writer, what it wrote."""
    shown = Table(title="lancequeue: tables")
    for column in ("table", "queue depth", "pending", "writer", "rows written"):
        shown.add_column(column)
    for status in statuses:
        alive = "alive" if status["writer_alive"] else "not running"
        shown.add_row(
            status["table"],
            str(status["queue_depth"]),
            str(status["pending"]),
            f"{alive} ({status['writer'] or '-'})",
            "-" if status["rows_written"] is None else str(status["rows_written"]),
        )
    return shown


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000))
    return f"{stamp} ({time.time() - ms / 1000:.1f}s ago)"


def _age(ms: int | None) -> str:
    # The entry's id is Redis time as the writer read it; the age is on this host's clock.
    return "-" if ms is None else f"read {max(0.0, time.time() - ms / 1000):.1f}s ago"


def _mean_append(status: dict[str, Any]) -> str | None:
    """Mean time a batch took to write and commit, from the writer's counters."""
    if not status["batches"] or status["append_ms"] is None:
        return None
    return f"{status['append_ms'] / status['batches']:.1f} ms"


def _rows(status: dict[str, Any]) -> list[tuple[str, object]]:
    alive = "alive" if status["writer_alive"] else "not running"
    return [
        ("queue depth", status["queue_depth"]),
        ("pending (read, not acked)", status["pending"]),
        ("oldest pending", _age(status["oldest_pending_ms"])),
        ("writer", f"{alive} ({status['writer'] or '-'})"),
        ("writer since", _when(status["writer_since_ms"])),
        ("last flush", _when(status["last_flush_at_ms"])),
        ("batches / rows written", f"{status['batches']} / {status['rows_written']}"),
        *([("rows/s", status["rows_per_s"])] if "rows_per_s" in status else []),
        ("mean append", _mean_append(status)),
        (
            "rejected / failed / expired",
            f"{status['rejected']} / {status['failed']} / {status['expired']}",
        ),
        ("duplicates dropped", status["duplicates_dropped"]),
        ("recovered after a crash", status["recovered_from_watermark"]),
        ("dead letters", status["dead_letters"]),
        ("table rows / version", f"{status['table_rows']} / {status['table_version']}"),
        *[
            (
                f"index {index.get('name')} ({index.get('kind')})",
                f"{index.get('indexed_rows')} rows indexed, {index.get('unindexed_rows')} not",
            )
            for index in status["indexes"]
        ],
    ]


def status_table(status: dict[str, Any]) -> Table:
    """The status as a two-column rich table titled with the table's name."""
    shown = Table(title=f"lancequeue: table {status['table']!r}", show_header=False)
    shown.add_column("what", style="bold")
    shown.add_column("value")
    for name, value in _rows(status):
        shown.add_row(name, "-" if value is None else str(value))
    return shown


def format_status(status: dict[str, Any], width: int = 100) -> str:
    """The status table as plain text."""
    console = Console(file=io.StringIO(), width=width, color_system=None)
    console.print(status_table(status))
    return console.file.getvalue()  # type: ignore[attr-defined, no-any-return]


@click.command("status")
@connection_options_any_table
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option(
    "--watch",
    "watch_s",
    type=float,
    default=None,
    is_flag=False,
    flag_value=2.0,
    help="Refresh every this many seconds (2 if given no value) until Ctrl-C.",
)
def status_command(
    table: str | None,
    redis_url: str | None,
    data_dir: Path | None,
    as_json: bool,
    watch_s: float | None,
) -> None:
    """Show a table's queue depth, pending entries, writer and progress; with no --table, one
    line for each table Redis holds. Exits 1 if no live writer serves the table (with no
    --table: any of them), 0 if one does."""
    if watch_s is not None and watch_s <= 0:
        raise click.BadParameter("--watch must be a positive number of seconds")
    if watch_s is not None and table is None:
        raise click.UsageError("--watch needs --table")
    try:
        url = resolve_redis_url(redis_url, data_dir, start_embedded=False)
        with sync_client(url) as client:
            if table is None:
                served = _list_tables(client, as_json)
            elif watch_s is None:
                status = read_status(client, table)
                if as_json:
                    click.echo(json.dumps(status, indent=2))
                else:
                    _print_table(status)
                served = status["writer_alive"]
                if not served:
                    click.echo(f"no writer is serving table {table!r}", err=True)
            else:
                rate = _Rate()
                with contextlib.suppress(KeyboardInterrupt):
                    while True:
                        _refresh(client, table, as_json, rate)
                        time.sleep(watch_s)  # the refresh period
                return
    except COMMAND_FAILURES as exc:
        raise click.ClickException(str(exc)) from exc
    if not served:
        sys.exit(1)


def _list_tables(client: SyncRedis, as_json: bool) -> bool:
    """Print every table's status line; whether a live writer serves any of them."""
    statuses = [read_status(client, name) for name in known_tables(client)]
    if as_json:
        click.echo(json.dumps(statuses, indent=2))
    elif statuses:
        Console().print(tables_table(statuses))
    else:
        click.echo("no lancequeue table in this Redis", err=True)
    return any(status["writer_alive"] for status in statuses)


class _Rate:
    """Rows written per second between two refreshes of ``--watch``."""

    def __init__(self) -> None:
        self._last: tuple[float, int] | None = None

    def update(self, status: dict[str, Any]) -> None:
        now, rows = time.monotonic(), status["rows_written"]
        last, self._last = self._last, (now, rows) if rows is not None else None
        status["rows_per_s"] = None
        if last is not None and rows is not None and now > last[0]:
            status["rows_per_s"] = round(max(0, rows - last[1]) / (now - last[0]), 1)


def _refresh(client: SyncRedis, table: str, as_json: bool, rate: _Rate) -> None:
    """One refresh of ``--watch``: the table redrawn (on a terminal), or one JSON line, with the
    rows written per second since the refresh before; a Redis error is shown and the next
    refresh tries again."""
    try:
        status = read_status(client, table)
    except REDIS_FAILURES as exc:
        click.echo(f"{time.strftime('%H:%M:%S')} Redis: {exc}", err=True)
        return
    rate.update(status)
    if as_json:
        click.echo(json.dumps(status))
        return
    if sys.stdout.isatty():
        click.clear()
    _print_table(status)


def _print_table(status: dict[str, Any]) -> None:
    Console().print(status_table(status))
