"""``lancequeue demo``: the whole write path on this machine in one command, with a live progress
bar (the demo itself is :mod:`lancequeue.bench.demo`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from lancequeue.bench.demo import run_demo
from lancequeue.bench.settings import BenchSettings
from lancequeue.common.connection import (
    DATA_DIR_DEFAULT,
    ENV_DATA_DIR,
    ENV_REDIS_URL,
    default_data_dir,
)
from lancequeue.common.errors import LancequeueError


@click.command("demo")
@click.option("--producers", default=4, show_default=True, help="Producer processes.")
@click.option("--records", default=5_000, show_default=True, help="Records each producer writes.")
@click.option("--dim", default=384, show_default=True, help="Vector dimension.")
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    envvar=ENV_DATA_DIR,
    show_envvar=True,
    help=f"Where the embedded Redis server and the demo table live. {DATA_DIR_DEFAULT}",
)
@click.option(
    "--redis", "redis_url", envvar=ENV_REDIS_URL, show_envvar=True, help="Use this Redis instead."
)
def demo_command(
    producers: int, records: int, dim: int, data_dir: Path | None, redis_url: str | None
) -> None:
    """Run a writer and K producer processes writing N records each; show what happened."""
    if producers < 1 or records < 1 or dim < 1:
        raise click.BadParameter("--producers, --records and --dim must be positive")
    directory = data_dir or default_data_dir()
    settings = BenchSettings(producers=producers, records=producers * records, dim=dim)
    bar = _ProgressBar()
    try:
        result = run_demo(settings, directory, redis_url, click.echo, bar.show)
    except LancequeueError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        bar.close()
    click.echo(result.summary)
    if result.started_redis:
        click.echo("\nThe embedded Redis server the demo started is stopped again.")
    elif redis_url is None:
        click.echo(
            f"\nThe embedded Redis server was running before the demo and keeps running; "
            f"`lancequeue redis stop --data-dir {directory}` stops it."
        )


class _ProgressBar:
    """click's progress bar of the rows written, opened at the first report."""

    def __init__(self) -> None:
        self._bar: Any = None
        self._shown = 0

    def show(self, rows: int, total: int) -> None:
        if self._bar is None:
            self._bar = click.progressbar(length=total, label="written", show_pos=True)
            self._bar.__enter__()
        self._bar.update(rows - self._shown)
        self._shown = rows

    def close(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None
