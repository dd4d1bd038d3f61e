"""``lancequeue produce``: send JSON Lines records to a table and wait until they are written."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import click

from lancequeue.common.cli_options import connection_options
from lancequeue.common.errors import LancequeueError, RecordRejected
from lancequeue.producer.producer import Producer

_SHOWN_REASONS = 5


def _records(files: tuple[IO[str], ...]) -> Iterator[tuple[str, Any]]:
    """(where, the parsed line) for each non-blank line; a line that is not JSON gives the
    ``RecordRejected`` saying so instead."""
    for handle in files:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                yield f"{handle.name}:{number}", json.loads(line)
            except json.JSONDecodeError as exc:
                yield f"{handle.name}:{number}", RecordRejected(f"not JSON: {exc}")


@click.command("produce")
@click.argument("files", nargs=-1, type=click.File("r"))
@connection_options
@click.option(
    "--batch",
    default=256,
    show_default=True,
    help="Records sent together and awaited before the next ones are read.",
)
@click.option(
    "--timeout",
    default=60.0,
    show_default=True,
    help="Seconds each record may take to reach the table (its deadline).",
)
def produce_command(
    files: tuple[IO[str], ...],
    table: str,
    redis_url: str | None,
    data_dir: Path | None,
    batch: int,
    timeout: float,
) -> None:
    """Send JSON Lines records from FILES (default: standard input), one object per line, and
    report how many were written, rejected or failed. Exits 1 unless all were written."""
    written = rejected = failed = 0
    reasons: list[str] = []
    with Producer(table, redis_url=redis_url, data_dir=data_dir) as producer:
        streams: tuple[IO[str], ...] = files or (sys.stdin,)
        source = _records(streams)
        while True:
            pending = [item for _, item in zip(range(batch), source, strict=False)]
            if not pending:
                break
            sendable = [r for _, r in pending if not isinstance(r, RecordRejected)]
            futures = iter(producer.enqueue_many(sendable, timeout))
            for where, item in pending:
                try:
                    if isinstance(item, RecordRejected):
                        raise item
                    next(futures).result()  # answered by the deadline + answer_grace_ms
                    written += 1
                except RecordRejected as exc:
                    rejected += 1
                    if len(reasons) < _SHOWN_REASONS:
                        reasons.append(f"{where}: {exc}")
                except (LancequeueError, TimeoutError) as exc:
                    failed += 1
                    if len(reasons) < _SHOWN_REASONS:
                        reasons.append(f"{where}: {type(exc).__name__}: {exc}")
    click.echo(f"written {written}, rejected {rejected}, failed {failed}")
    for reason in reasons:
        click.echo(f"  {reason}", err=True)
    sys.exit(0 if rejected == failed == 0 else 1)
