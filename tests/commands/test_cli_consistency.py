"""Every ``lancequeue`` command speaks the same way: each option read from the environment says
so in ``--help``, a duration names its unit, ``--data-dir``'s default is written one way, and a
bad setting is named by its option."""

from __future__ import annotations

from collections.abc import Iterator

import click

from lancequeue.cli import main
from lancequeue.common.connection import DATA_DIR_DEFAULT
from tests.support import run_cli

UNIT_NOT_IN_NAME = {"--watch", "--compact-every"}
"""``--watch``: a refresh period in seconds, as ``watch -n``'s; ``--compact-every``: a count
of fragments, or a period whose value carries its unit (``30s``)."""


def _commands(
    group: click.Command = main, path: str = "lancequeue"
) -> Iterator[tuple[str, click.Command]]:
    context = click.Context(group)
    if isinstance(group, click.Group):
        for name in group.list_commands(context):
            command = group.get_command(context, name)
            assert command is not None
            yield from _commands(command, f"{path} {name}")
    else:
        yield path, group


def _options() -> Iterator[tuple[str, click.Option]]:
    for path, command in _commands():
        for parameter in command.params:
            if isinstance(parameter, click.Option) and not parameter.hidden:
                yield path, parameter


def test_every_option_read_from_the_environment_shows_its_variable_in_help() -> None:
    hidden = [
        f"{path} {option.opts[0]}"
        for path, option in _options()
        if option.envvar and not option.show_envvar
    ]
    assert hidden == []
    assert "[env var: LANCEQUEUE_REDIS]" in run_cli("produce", "--help").stdout


def test_every_duration_names_its_unit() -> None:
    unitless = [
        f"{path} {option.opts[0]}"
        for path, option in _options()
        if any(word in (option.help or "").lower() for word in ("seconds", "milliseconds"))
        and not option.opts[0].endswith(("-ms", "-s"))
        and option.opts[0] not in UNIT_NOT_IN_NAME
    ]
    assert unitless == []


def test_data_dir_s_default_is_written_the_same_everywhere() -> None:
    helps = {
        path: option.help or "" for path, option in _options() if option.opts[0] == "--data-dir"
    }
    assert len(helps) >= 8  # writer, produce, status, dlq x3, redis x3, demo
    assert {path: DATA_DIR_DEFAULT in text for path, text in helps.items()} == dict.fromkeys(
        helps, True
    )


def test_a_bad_setting_is_named_by_its_option() -> None:
    done = run_cli("writer", "--table", "docs", "--keep-versions", "1")
    assert done.returncode == 2 and "--keep-versions must be at least 2" in done.stderr
    assert "keep_versions" not in done.stderr
    done = run_cli("writer", "--table", "docs", "--max-queue-size", "4", "--max-batch", "8")
    assert "--max-queue-size (4) must be at least --max-batch (8)" in done.stderr
