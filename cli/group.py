"""The ``lancequeue`` command: a click group whose subcommands are imported only when used,
so ``lancequeue produce --help`` never loads lancedb (click's lazy-group pattern)."""

from __future__ import annotations

import importlib
from typing import Any

import click

from lancequeue.common.logs import LOG_FORMATS, configure_logging

SUBCOMMANDS = {
    "writer": ("lancequeue.cli.writer", "writer_command", "Run the writer that owns a table."),
    "demo": (
        "lancequeue.cli.demo",
        "demo_command",
        "Run a writer and producer processes on this machine; show the result.",
    ),
    "bench": (
        "lancequeue.cli.bench",
        "bench_command",
        "Benchmark lancequeue end to end, optionally against single-process baselines.",
    ),
    "produce": (
        "lancequeue.cli.produce",
        "produce_command",
        "Send records from JSON Lines, CSV or Parquet files to a table; wait until written.",
    ),
    "dlq": (
        "lancequeue.cli.dlq",
        "dlq_group",
        "List, replay or purge a table's dead letters.",
    ),
    "redis": (
        "lancequeue.cli.embedded_redis",
        "redis_group",
        "Start, stop or check the embedded Redis server of a data directory.",
    ),
    "status": (
        "lancequeue.cli.status",
        "status_command",
        "Show a table's queue, its writer and its progress.",
    ),
}


class LazyGroup(click.Group):
    """A group whose subcommands live in modules imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in SUBCOMMANDS:
            return None
        module_name, attr, _ = SUBCOMMANDS[cmd_name]
        command: Any = getattr(importlib.import_module(module_name), attr)
        if not isinstance(command, click.Command):
            raise TypeError(f"{module_name}.{attr} is not a click command")
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Short help from the table above, so `lancequeue --help` imports no subcommand.
        rows = [(name, SUBCOMMANDS[name][2]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup)
@click.option(
    "-v",
    "--verbose",
    count=True,
    help="More logging: -v debug for lancequeue, -vv debug for everything.",
)
@click.option(
    "--log-format",
    type=click.Choice(LOG_FORMATS),
    default="text",
    show_default=True,
    envvar="LANCEQUEUE_LOG_FORMAT",
    show_envvar=True,
    help="Log lines as text, or as one JSON object each for log shippers.",
)
@click.version_option(package_name="lancequeue")
def main(verbose: int, log_format: str) -> None:
    """lancequeue: many processes write one LanceDB table through a Redis stream."""
    configure_logging(verbose, log_format)
