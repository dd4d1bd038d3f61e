"""Click options shared by the client-side commands (``produce``, ``status``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from lancequeue.common.connection import DATA_DIR_DEFAULT, ENV_DATA_DIR, ENV_REDIS_URL

C = TypeVar("C", bound=Callable[..., Any])


def connection_options(command: C) -> C:
    """``--table``, ``--redis`` and ``--data-dir``, each also from its environment variable."""
    return _connection_options(command, table_required=True)


def connection_options_any_table(command: C) -> C:
    """The same, with ``--table`` optional (a command that can also speak of every table)."""
    return _connection_options(command, table_required=False)


def _connection_options(command: C, table_required: bool) -> C:
    table_help = "The table." if table_required else "The table (default: every table)."
    for option in reversed(
        [
            click.option(
                "--table",
                required=table_required,
                envvar="LANCEQUEUE_TABLE",
                show_envvar=True,
                help=table_help,
            ),
            click.option(
                "--redis",
                "redis_url",
                envvar=ENV_REDIS_URL,
                show_envvar=True,
                help="Redis URL. Default: the embedded server of --data-dir.",
            ),
            click.option(
                "--data-dir",
                type=click.Path(path_type=Path),
                envvar=ENV_DATA_DIR,
                show_envvar=True,
                help=f"Data directory of the embedded Redis server. {DATA_DIR_DEFAULT}",
            ),
        ]
    ):
        command = option(command)
    return command
