"""``lancequeue writer``: options generated from :class:`WriterSettings`, one environment
variable per option (``--coalesce-ms`` ↔ ``LANCEQUEUE_COALESCE_MS``)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import re
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from lancequeue.common.connection import resolve_redis_url
from lancequeue.common.errors import ConfigError, LancequeueError
from lancequeue.common.keys import TableKeys
from lancequeue.common.redis_client import COMMAND_FAILURES, sync_client
from lancequeue.writer.allocator import limit_malloc_arenas
from lancequeue.writer.metrics import WriterMetrics
from lancequeue.writer.settings import WriterSettings, parse_storage_options
from lancequeue.writer.writer import Writer

logger = logging.getLogger(__name__)


def env_var(flag: str) -> str:
    """The environment variable of a CLI flag: ``--max-batch`` → ``LANCEQUEUE_MAX_BATCH``."""
    return "LANCEQUEUE_" + flag.lstrip("-").upper().replace("-", "_")


def settings_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate ``command`` with one click option per ``WriterSettings`` field."""
    defaults = WriterSettings.__dataclass_fields__
    for settings_field in reversed(dataclasses.fields(WriterSettings)):
        flag = settings_field.metadata["flag"]
        default = defaults[settings_field.name].default
        required = default is dataclasses.MISSING
        flag_only = isinstance(default, bool)
        click_type: Any = (
            click.BOOL
            if flag_only
            else click.INT
            if isinstance(default, int)
            else click.FLOAT
            if isinstance(default, float)
            else (click.Path(path_type=Path) if settings_field.name == "data_dir" else click.STRING)
        )
        # One writer process may serve several tables; it may import several modules.
        many = settings_field.name in ("table", "imports", "upsert_key", "delete_key")
        pairs = settings_field.name == "storage_options"
        command = click.option(
            flag,
            settings_field.name,
            type=click_type,
            is_flag=flag_only,
            multiple=many or pairs,
            callback=_storage_options if pairs else None,
            envvar=env_var(flag),
            required=False,  # checked in writer_command: --check needs only --table
            default=() if many or pairs else (None if required else default),
            show_default=not required and default is not None and not flag_only,
            show_envvar=True,
            help=settings_field.metadata["help"]
            + (
                " Repeat it to serve several tables from one process."
                if settings_field.name == "table"
                else ""
            ),
        )(command)
    return command


def _storage_options(
    context: click.Context, parameter: click.Parameter, pairs: tuple[str, ...]
) -> dict[str, str] | None:
    try:
        return parse_storage_options(pairs) or None
    except ConfigError as exc:
        raise click.BadParameter(str(exc), context, parameter) from exc


@click.command("writer")
@settings_options
@click.option(
    "--check",
    is_flag=True,
    help="Start nothing: exit 0 if a live writer holds the table's lease, 1 if not (for health "
    "checks). Needs only --table and the Redis options.",
)
def writer_command(check: bool, **options: Any) -> None:
    """Run the writer that owns a table: coalesce records from its Redis stream into batches,
    append each in one commit, ack and answer every producer. Several --table options serve
    several tables from this process, each with its own stream, lease and loop.

    SIGTERM or Ctrl-C: stop reading, flush what is in hand, answer, exit 0. A second signal
    exits at once; unacked records stay pending for the next writer.
    """
    if os.getcwd() not in sys.path:  # --import, --schema and --on-flushed find modules here
        sys.path.insert(0, os.getcwd())
    tables: tuple[str, ...] = options.pop("table")
    if not tables:
        raise click.UsageError("Missing option '--table'.")
    needed = [] if check else [name for name in _required_fields() if name != "table"]
    missing = [_flag(name) for name in needed if options.get(name) is None]
    if missing:
        raise click.UsageError(f"Missing option {', '.join(repr(flag) for flag in missing)}.")
    if len(set(tables)) != len(tables):
        raise click.BadParameter("a table is named twice", param_hint="'--table'")
    if check:
        codes = [check_lease(table, options["redis_url"], options["data_dir"]) for table in tables]
        sys.exit(max(codes))
    limit_malloc_arenas()  # before Lance's threads make arenas of their own
    metrics = WriterMetrics() if options["metrics_port"] and len(tables) > 1 else None
    try:
        writers = [Writer(WriterSettings(table=table, **options), metrics) for table in tables]
    except ConfigError as exc:
        raise click.BadParameter(in_flag_names(str(exc))) from exc
    if metrics is not None:
        try:
            metrics.serve(options["metrics_host"], options["metrics_port"])
        except ConfigError as exc:
            raise click.BadParameter(str(exc)) from exc
    try:
        asyncio.run(_run_until_signalled(writers))
    finally:
        if metrics is not None:
            metrics.close()


def check_lease(table: str, redis_url: str | None, data_dir: Path | None) -> int:
    """``--check``: say whether a live writer holds ``table``'s lease; the exit code (0: one
    does, 1: none does or Redis cannot be reached). Never starts the embedded server."""
    try:
        url = resolve_redis_url(redis_url, data_dir, start_embedded=False)
        with sync_client(url, socket_timeout=5, socket_connect_timeout=5) as client:
            holder = client.get(TableKeys(table).lease)
    except COMMAND_FAILURES as exc:
        click.echo(f"table {table!r}: cannot check the writer: {exc}", err=True)
        return 1
    if holder is None:
        click.echo(f"table {table!r}: no writer holds the lease")
        return 1
    consumer = holder.decode(errors="replace").split(" ", 1)[0]
    click.echo(f"table {table!r}: writer {consumer} holds the lease")
    return 0


def in_flag_names(message: str) -> str:
    """A settings error as the command line speaks: ``keep_versions`` → ``--keep-versions``."""
    for settings_field in dataclasses.fields(WriterSettings):
        if "_" in settings_field.name or settings_field.name == "imports":
            flag = settings_field.metadata["flag"]
            message = re.sub(rf"\b{settings_field.name}\b", flag, message)
    return message


def _required_fields() -> list[str]:
    return [
        settings_field.name
        for settings_field in dataclasses.fields(WriterSettings)
        if settings_field.default is dataclasses.MISSING
        and settings_field.default_factory is dataclasses.MISSING
    ]


def _flag(name: str) -> str:
    return str(WriterSettings.__dataclass_fields__[name].metadata["flag"])


async def _run_until_signalled(writers: list[Writer]) -> None:
    """Run every writer (one per table) until a signal; exit 1 if any of them failed."""
    loop = asyncio.get_running_loop()
    signals_seen = 0

    def stop_all() -> None:
        for writer in writers:
            writer.request_stop()

    def on_signal(signum: int, frame: object) -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen == 1:
            logger.info(
                "%s: finishing the batch in hand (again to exit at once)",
                signal.Signals(signum).name,
            )
            with contextlib.suppress(RuntimeError):  # the loop may be closed already
                loop.call_soon_threadsafe(stop_all)  # wakes the loop, signal-safe
        else:
            logger.warning("second signal: exiting now; unacked records stay pending")
            os._exit(1)

    # Plain handlers, not loop.add_signal_handler: they run even while a blocking on_flushed
    # hook holds the event loop, so the second signal always exits at once.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    # A writer that ends before any signal (replaced, misconfigured, crashed) stops the others
    # too, and the process exits 1, so a supervisor restarts all of them.
    writer_of = {asyncio.ensure_future(writer.run()): writer for writer in writers}
    running = set(writer_of)
    failed = False
    while running:
        done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
        crash: BaseException | None = None
        for task in done:
            error = task.exception()
            if isinstance(error, LancequeueError):
                logger.error("%s", error)
                failed = True
            elif error is not None:
                crash = error
            elif signals_seen == 0 and not writer_of[task].settings.burst:
                failed = True  # it returned without being asked to stop (or its queue empty)
        if failed and running:
            logger.error("a writer stopped on its own: stopping the other tables' writers too")
            stop_all()
        if crash is not None:
            await asyncio.gather(*running, return_exceptions=True)
            raise crash
    if failed:
        sys.exit(1)
