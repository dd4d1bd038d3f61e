"""``lancequeue redis start|stop|status``: manage the embedded Redis server of a data directory
explicitly (every lancequeue process otherwise starts it on first use)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from lancequeue.common import embedded_redis
from lancequeue.common.connection import DATA_DIR_DEFAULT, ENV_DATA_DIR, default_data_dir
from lancequeue.common.errors import LancequeueError

_data_dir_option = click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    envvar=ENV_DATA_DIR,
    show_envvar=True,
    help=f"Data directory of the embedded Redis server. {DATA_DIR_DEFAULT}",
)


@click.group("redis")
def redis_group() -> None:
    """Start, stop or check the embedded Redis server of a data directory."""


@redis_group.command("start")
@_data_dir_option
def start_command(data_dir: Path | None) -> None:
    """Start the embedded server (AOF on, unix socket only) unless it runs; print its URL."""
    try:
        url = embedded_redis.ensure_running(data_dir or default_data_dir())
    except LancequeueError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(url)


@redis_group.command("stop")
@_data_dir_option
def stop_command(data_dir: Path | None) -> None:
    """Shut the embedded server down (it writes its AOF first). Exit 1 if none was running."""
    directory = data_dir or default_data_dir()
    try:
        stopped = embedded_redis.stop(directory)
    except LancequeueError as exc:
        raise click.ClickException(str(exc)) from exc
    if not stopped:
        click.echo(f"no embedded Redis server runs for {directory}")
        sys.exit(1)
    click.echo(f"stopped the embedded Redis server of {directory}")


@redis_group.command("status")
@_data_dir_option
def status_command(data_dir: Path | None) -> None:
    """Exit 0 and print the URL if the embedded server runs, 1 if not (or if its socket is not
    this user's: a symlink, or a socket of another user's, is refused with an error)."""
    directory = data_dir or default_data_dir()
    try:
        running = embedded_redis.is_running(directory)
    except LancequeueError as exc:
        raise click.ClickException(str(exc)) from exc
    if not running:
        click.echo(f"not running (data directory {directory})")
        sys.exit(1)
    click.echo(f"running at {embedded_redis.url_for(directory)} (data directory {directory})")
