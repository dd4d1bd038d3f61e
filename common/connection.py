"""Where a process finds Redis: an explicit URL, ``LANCEQUEUE_REDIS``, or the embedded server."""

from __future__ import annotations

import os
from pathlib import Path

from lancequeue.common import embedded_redis
from lancequeue.common.errors import RedisUnavailable

ENV_REDIS_URL = "LANCEQUEUE_REDIS"
ENV_DATA_DIR = "LANCEQUEUE_DATA_DIR"
DATA_DIR_DEFAULT = "Default: ~/.local/share/lancequeue ($XDG_DATA_HOME/lancequeue)."
"""How every command's help states ``--data-dir``'s default (``default_data_dir``)."""


def default_data_dir() -> Path:
    """``$LANCEQUEUE_DATA_DIR``, else ``$XDG_DATA_HOME/lancequeue``, where ``XDG_DATA_HOME``
    defaults to ``~/.local/share``."""
    explicit = os.environ.get(ENV_DATA_DIR)
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg) / "lancequeue"


def resolve_redis_url(
    redis_url: str | None, data_dir: Path | str | None = None, start_embedded: bool = False
) -> str:
    """The Redis URL to use: ``redis_url``, else ``$LANCEQUEUE_REDIS``, else the embedded server
    of ``data_dir``. Only the writer, the demo and ``lancequeue redis start`` start that server
    (``start_embedded``); any other process raises :class:`RedisUnavailable` at once if it is
    not running, naming the remedies, rather than send into a Redis nobody reads."""
    if redis_url:
        return redis_url
    from_env = os.environ.get(ENV_REDIS_URL)
    if from_env:
        return from_env
    directory = Path(data_dir) if data_dir else default_data_dir()
    if start_embedded:
        return embedded_redis.ensure_running(directory)
    if not embedded_redis.is_running(directory):
        raise RedisUnavailable(no_redis_message(directory))
    return embedded_redis.url_for(directory)


def no_redis_message(directory: Path) -> str:
    """What a process with no Redis URL and no embedded server running is told."""
    return (
        f"no Redis URL given (--redis, redis_url= or ${ENV_REDIS_URL}) and no embedded Redis "
        f"runs for data directory {directory}: set a Redis URL, or start the writer (which "
        f"starts the embedded Redis) or `lancequeue redis start --data-dir {directory}` first"
    )
