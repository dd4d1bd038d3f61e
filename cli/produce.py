"""``lancequeue produce``: send records from JSON Lines, CSV or Parquet files to a table and
wait until they are written."""

from __future__ import annotations

import json
import sys
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import click

from lancequeue.cli.options import connection_options
from lancequeue.common.connection import resolve_redis_url
from lancequeue.common.errors import LancequeueError, RecordRejected
from lancequeue.common.keys import TableKeys
from lancequeue.common.protocol import CONFIG_COLUMNS, CONFIG_UPSERT_KEY
from lancequeue.common.redis_client import COMMAND_FAILURES, sync_client
from lancequeue.producer.producer import Producer
from lancequeue.producer.results import WriteResult
from lancequeue.producer.sources import FORMATS, Columns, Item, file_format, read_items

_SHOWN_REASONS = 5
_PROGRESS_EVERY_S = 0.5


@dataclass
class _Tally:
    """What became of the records so far, and the first few reasons for those not written."""

    written: int = 0
    rejected: int = 0
    failed: int = 0
    version: int | None = None
    """The newest table version a written record's answer named: every record written is
    visible from it on."""
    reasons: list[str] = field(default_factory=list)

    def settle(self, where: str, outcome: RecordRejected | Future[WriteResult]) -> None:
        try:
            if isinstance(outcome, RecordRejected):
                raise outcome
            result = outcome.result()  # answered by the deadline + answer_grace_ms
            self.written += 1
            if result.version is not None:
                self.version = max(self.version or 0, result.version)
        except RecordRejected as exc:
            self.rejected += 1
            self._reason(f"{where}: {exc}")
        except (LancequeueError, TimeoutError) as exc:
            self.failed += 1
            self._reason(f"{where}: {type(exc).__name__}: {exc}")

    def settle_done(self, outcomes: list[RecordRejected | Future[WriteResult]]) -> int:
        """Count the outcomes known now; returns how many are not."""
        unknown = 0
        for outcome in outcomes:
            if isinstance(outcome, Future) and not outcome.done():
                unknown += 1
            else:
                self.settle("", outcome)
        return unknown

    def _reason(self, text: str) -> None:
        if len(self.reasons) < _SHOWN_REASONS:
            self.reasons.append(text)

    @property
    def line(self) -> str:
        counts = f"written {self.written:,}, rejected {self.rejected:,}, failed {self.failed:,}"
        return counts if self.version is None else f"{counts} (table version {self.version})"


def _chunks(items: Iterator[Item], size: int) -> Iterator[list[Item]]:
    while chunk := [item for _, item in zip(range(size), items, strict=False)]:
        yield chunk


def _all_items(
    paths: tuple[str, ...], forced: str | None, columns: Columns | None
) -> Iterator[Item]:
    for path in paths:
        yield from read_items(path, file_format(path, forced), columns)


def published_columns(table: str, redis_url: str | None, data_dir: Path | None) -> Columns | None:
    """What each column of ``table`` holds, as its writer published it once the table existed;
    None if it was not (a table that does not exist yet: CSV cells are typed by guessing)."""
    url = resolve_redis_url(redis_url, data_dir)
    with sync_client(url) as client:
        raw = client.hget(TableKeys(table).config, CONFIG_COLUMNS)
    try:
        kinds = json.loads(raw) if raw else None
    except ValueError:
        return None
    if not isinstance(kinds, dict) or not all(isinstance(v, str) for v in kinds.values()):
        return None
    return kinds


@click.command("produce")
@click.argument("files", nargs=-1)
@connection_options
@click.option(
    "--format",
    "forced_format",
    type=click.Choice(FORMATS),
    default=None,
    help="Format of every FILE. Default: from each name (.jsonl/.ndjson, .csv, "
    ".parquet/.pq); standard input is JSON Lines.",
)
@click.option("--batch", default=256, show_default=True, help="Records sent together.")
@click.option(
    "--concurrency",
    default=4,
    show_default=True,
    help="Batches in flight at once: the next is sent while earlier ones are being written.",
)
@click.option(
    "--upsert-key",
    default=None,
    help="The table's key column(s), comma-separated: check that its writer upserts by them "
    "(lancequeue writer --upsert-key) before sending, so that running the command again after "
    "an interruption writes each record once.",
)
@click.option(
    "--timeout-ms",
    default=60_000,
    show_default=True,
    help="Milliseconds each record may take to reach the table (its deadline).",
)
def produce_command(
    files: tuple[str, ...],
    table: str,
    redis_url: str | None,
    data_dir: Path | None,
    forced_format: str | None,
    batch: int,
    concurrency: int,
    upsert_key: str | None,
    timeout_ms: int,
) -> None:
    """Send records from FILES (default: standard input) and report how many were written,
    rejected (with the first few reasons) or failed. JSON Lines: one object per line; CSV: a
    header row, vectors as JSON lists ("[0.1, 0.2]"); Parquet: read a row batch at a time.
    Exits 1 unless every record was written; interrupted (Ctrl-C), prints what it knows so far
    and exits 130."""
    if batch < 1 or concurrency < 1 or timeout_ms < 1:
        raise click.BadParameter("--batch, --concurrency and --timeout-ms must be positive")
    timeout = timeout_ms / 1000
    paths = files or ("-",)
    try:
        for path in paths:  # a bad name fails before anything is sent
            if file_format(path, forced_format) == "parquet" and path == "-":
                raise click.BadParameter("Parquet cannot be read from standard input")
            if path != "-" and not Path(path).is_file():
                raise click.BadParameter(f"{path}: no such file", param_hint="FILES")
    except LancequeueError as exc:
        raise click.BadParameter(str(exc), param_hint="FILES") from exc
    tally = _Tally()
    progress = _Progress(sys.stderr.isatty())
    # sent, not yet counted, in order (taken off as counted: an interrupt counts the rest)
    in_flight: deque[tuple[str, RecordRejected | Future[WriteResult]]] = deque()
    chunks: deque[int] = deque()  # the sizes of the chunks in flight
    try:
        made = Producer(table, redis_url=redis_url, data_dir=data_dir)
    except LancequeueError as exc:  # a bad URL, table name or certificate: one line
        raise click.ClickException(str(exc)) from exc
    columns = None
    try:
        if upsert_key is not None:
            _check_upsert_key(table, upsert_key, redis_url, data_dir)
        if any(file_format(path, forced_format) == "csv" for path in paths):
            # CSV cells typed by the table's columns, if it exists
            columns = published_columns(table, redis_url, data_dir)
    except COMMAND_FAILURES as exc:
        made.close(timeout=0)
        raise click.ClickException(f"reading the table's config: {exc}") from exc
    except click.ClickException:
        made.close(timeout=0)
        raise
    try:
        for chunk in _chunks(_all_items(paths, forced_format, columns), batch):
            sendable = [item for _, item in chunk if not isinstance(item, RecordRejected)]
            futures = iter(made.enqueue_many(sendable, timeout))
            in_flight.extend(
                (where, item if isinstance(item, RecordRejected) else next(futures))
                for where, item in chunk
            )
            chunks.append(len(chunk))
            while len(chunks) >= concurrency:
                _count(tally, in_flight, chunks.popleft())
                progress.show(tally)
        _count(tally, in_flight, len(in_flight))
    except KeyboardInterrupt:
        unknown = tally.settle_done([outcome for _, outcome in in_flight])
        made.close(timeout=0)  # no waiting for answers: the user asked to stop
        progress.done()
        click.echo(f"interrupted: {tally.line}, {unknown:,} sent without an answer yet")
        if unknown:
            click.echo(
                "  records sent without an answer may still be written"
                + ("; sending them again upserts them once" if upsert_key else ""),
                err=True,
            )
        sys.exit(130)
    finally:
        made.close()  # answered by now (a no-op after an interruption's)
    progress.done()
    click.echo(tally.line)
    for reason in tally.reasons:
        click.echo(f"  {reason}", err=True)
    sys.exit(0 if tally.rejected == tally.failed == 0 else 1)


def _count(
    tally: _Tally,
    in_flight: deque[tuple[str, RecordRejected | Future[WriteResult]]],
    count: int,
) -> None:
    """Wait for and count the oldest ``count`` records in flight, each taken off once counted."""
    for _ in range(count):
        where, outcome = in_flight[0]
        tally.settle(where, outcome)
        in_flight.popleft()


def _check_upsert_key(
    table: str, upsert_key: str, redis_url: str | None, data_dir: Path | None
) -> None:
    """Raise ``ClickException`` unless the table's writer published ``upsert_key`` as its
    ``--upsert-key``."""
    wanted = [name.strip() for name in upsert_key.split(",") if name.strip()]
    url = resolve_redis_url(redis_url, data_dir)
    with sync_client(url) as client:
        raw = client.hget(TableKeys(table).config, CONFIG_UPSERT_KEY)
    published = raw.decode(errors="replace") if raw is not None else None
    if published is None:
        raise click.ClickException(
            f"no writer of table {table!r} has said how it writes: start it (lancequeue writer "
            f"--table {table} --upsert-key {','.join(wanted)}) before sending upserts"
        )
    if published.split(",") != wanted:
        how = f"upserts by {published}" if published else "appends every record"
        raise click.ClickException(
            f"the writer of table {table!r} {how}, not upserts by {','.join(wanted)}: "
            "sending again after an interruption would not write each record once"
        )


class _Progress:
    """A status line on a terminal's stderr, rewritten in place at most twice a second."""

    def __init__(self, enabled: bool) -> None:
        self._enabled = enabled
        self._started = self._shown_at = time.monotonic()

    def show(self, tally: _Tally) -> None:
        now = time.monotonic()
        if not self._enabled or now - self._shown_at < _PROGRESS_EVERY_S:
            return
        self._shown_at = now
        rate = tally.written / max(now - self._started, 1e-9)
        click.echo(f"\r{tally.line} ({rate:,.0f} records/s)", err=True, nl=False)

    def done(self) -> None:
        if self._enabled:
            click.echo("", err=True)
