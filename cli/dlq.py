"""``lancequeue dlq``: list, replay and purge a table's dead letters."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from lancequeue.cli.options import connection_options
from lancequeue.common.connection import resolve_redis_url
from lancequeue.common.keys import TableKeys
from lancequeue.common.redis_client import COMMAND_FAILURES, SyncRedis, sync_client
from lancequeue.producer.dead_letters import (
    DEFAULT_ANSWER_GRACE_MS,
    DeadLetter,
    delete_dead_letters,
    describe,
    format_line,
    read_by_ids,
    read_dead_letters,
    replay,
)


def _connect(table: str, redis_url: str | None, data_dir: Path | None) -> tuple[str, TableKeys]:
    keys = TableKeys(table)  # ConfigError names a bad table name before any I/O
    return resolve_redis_url(redis_url, data_dir, start_embedded=False), keys


def _selected(client: SyncRedis, keys: TableKeys, ids: tuple[str, ...]) -> list[DeadLetter]:
    """The dead letters named by ``ids``, or all of them when ``ids`` is empty."""
    return read_by_ids(client, keys, ids) if ids else read_dead_letters(client, keys)


def _check_selection(ids: tuple[str, ...], everything: bool) -> None:
    if ids and everything:
        raise click.UsageError("give dead-letter IDs or --all, not both")
    if not ids and not everything:
        raise click.UsageError("give the IDs of the dead letters, or --all")


@click.group("dlq")
def dlq_group() -> None:
    """List, replay or purge a table's dead letters: records set aside by the writer after
    they were delivered more than --max-deliveries times without being written."""


@dlq_group.command("list", short_help="Show the dead letters.")
@connection_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON Lines, one dead letter each.")
@click.option(
    "--limit", default=100, show_default=True, help="Show at most this many (0: all), oldest first."
)
def list_command(
    table: str, redis_url: str | None, data_dir: Path | None, as_json: bool, limit: int
) -> None:
    """Show each dead letter: its id, original id, deliveries, reason, the record's size and a
    preview of the record."""
    if limit < 0:
        raise click.BadParameter("must be 0 or more", param_hint="--limit")
    try:
        url, keys = _connect(table, redis_url, data_dir)
        with sync_client(url) as client:
            total = int(client.xlen(keys.dead_letters))
            letters = read_dead_letters(client, keys, limit or None)
    except COMMAND_FAILURES as exc:
        raise click.ClickException(str(exc)) from exc
    if not letters:
        if not as_json:
            click.echo(f"no dead letters for table {table!r}")
        return
    for letter in letters:
        info = describe(letter)
        click.echo(json.dumps(info, ensure_ascii=False) if as_json else format_line(info))
    if len(letters) < total:
        click.echo(f"showing {len(letters)} of {total}; --limit 0 shows all", err=True)


@dlq_group.command("replay", short_help="Send dead letters to the writer again.")
@click.argument("ids", nargs=-1)
@connection_options
@click.option("--all", "everything", is_flag=True, help="Replay every dead letter.")
@click.option(
    "--timeout-ms",
    default=60_000,
    show_default=True,
    help="The replayed records' timeout: one not in a writer's batch by then is not written.",
)
@click.option(
    "--answer-grace-ms",
    default=DEFAULT_ANSWER_GRACE_MS,
    show_default=True,
    help="How long after the timeout the command still waits for the writer's answers.",
)
def replay_command(
    ids: tuple[str, ...],
    table: str,
    redis_url: str | None,
    data_dir: Path | None,
    everything: bool,
    timeout_ms: int,
    answer_grace_ms: int,
) -> None:
    """Send the records and deletes of the dead letters IDS (or --all) to the writer again,
    in their order; delete each one whose record was written (or delete applied), leave the
    others. Exits 1 unless all were written. Done
    within about --timeout-ms plus --answer-grace-ms: a record unanswered by then was not
    written.

    A record that fails again after more deliveries becomes a new dead letter; its old one
    stays too, so replay or purge one of the two."""
    _check_selection(ids, everything)
    if timeout_ms <= 0:
        raise click.BadParameter("must be positive", param_hint="--timeout-ms")
    if answer_grace_ms < 0:
        raise click.BadParameter("must not be negative", param_hint="--answer-grace-ms")
    try:
        url, keys = _connect(table, redis_url, data_dir)
        with sync_client(url) as client:
            letters = _selected(client, keys, ids)
        if not letters:
            click.echo(f"no dead letters for table {table!r}")
            return
        report = replay(url, keys, letters, timeout_ms, answer_grace_ms)
    except COMMAND_FAILURES as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"written {len(report.written)}, failed {len(report.failed)}")
    for letter_id, why in report.failed:
        click.echo(f"  {letter_id}: {why}", err=True)
    sys.exit(1 if report.failed else 0)


@dlq_group.command("purge", short_help="Delete dead letters.")
@click.argument("ids", nargs=-1)
@connection_options
@click.option("--all", "everything", is_flag=True, help="Delete every dead letter.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def purge_command(
    ids: tuple[str, ...],
    table: str,
    redis_url: str | None,
    data_dir: Path | None,
    everything: bool,
    yes: bool,
) -> None:
    """Delete the dead letters IDS (or --all; those present when the command started) for
    good. Asks first unless --yes."""
    _check_selection(ids, everything)
    try:
        url, keys = _connect(table, redis_url, data_dir)
        with sync_client(url) as client:
            chosen = [letter.id for letter in _selected(client, keys, ids)]
            if not chosen:
                click.echo(f"no dead letters for table {table!r}")
                return
            question = f"Delete {len(chosen)} dead letter(s) of table {table!r} for good?"
            if not yes and not click.confirm(question, default=False):
                click.echo("nothing deleted")
                sys.exit(1)
            deleted = delete_dead_letters(client, keys, chosen)
    except COMMAND_FAILURES as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"deleted {deleted} dead letter(s)")
