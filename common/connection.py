"""Where a process finds Redis: an explicit URL, ``LANCEQUEUE_REDIS``, or the embedded server."""

from __future__ import annotations

import os
from pathlib import Path

from lancequeue.common import embedded_redis
from lancequeue.common.errors import LancequeueError

ENV_REDIS_URL = "LANCEQUEUE_REDIS"
ENV_DATA_DIR = "LANCEQUEUE_DATA_DIR"


def default_data_dir() -> Path:
    """``$LANCEQUEUE_DATA_DIR``, else ``$XDG_DATA_HOME/lancequeue``, where ``XDG_DATA_HOME``
    defaults to ``~/.local/share``."""
    explicit = os.environ.get(ENV_DATA_DIR)
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg) / "lancequeue"


def resolve_redis_url(
    redis_url: str | None, data_dir: Path | str | None = None, start_embedded: bool = True
) -> str:
    """The Redis URL to use: ``redis_url``, else ``$LANCEQUEUE_REDIS``, else the embedded server
    of ``data_dir`` (started if it is not running and ``start_embedded``)."""
    if redis_url:
        return redis_url
    from_env = os.environ.get(ENV_REDIS_URL)
    if from_env:
        return from_env
    directory = Path(data_dir) if data_dir else default_data_dir()
    if start_embedded:
        return embedded_redis.ensure_running(directory)
    if not embedded_redis.is_running(directory):
        raise LancequeueError(f"no Redis URL given and no embedded Redis runs for {directory}")
    return embedded_redis.url_for(directory)
