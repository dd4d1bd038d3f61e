"""Click options shared by the client-side commands (``produce``, ``status``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from lancequeue.common.connection import ENV_DATA_DIR, ENV_REDIS_URL

C = TypeVar("C", bound=Callable[..., Any])


def connection_options(command: C) -> C:
    """``--table``, ``--redis`` and ``--data-dir``, each also from its environment variable."""
    for option in reversed(
        [
            click.option("--table", required=True, envvar="LANCEQUEUE_TABLE", help="The table."),
            click.option(
                "--redis",
                "redis_url",
                envvar=ENV_REDIS_URL,
                help="Redis URL. Default: the embedded server of --data-dir.",
            ),
            click.option(
                "--data-dir",
                type=click.Path(path_type=Path),
                envvar=ENV_DATA_DIR,
                help="Data directory of the embedded Redis server.",
            ),
        ]
    ):
        command = option(command)
    return command
