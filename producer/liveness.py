"""Whether a writer serves the table: what a producer checks once, as it first connects, so a
mistyped table name or a writer that is not running is said at once, not at each record's
deadline."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def writer_live(until_ms: bytes | str | None, redis_time: Any) -> bool:
    """Whether the config hash's ``writer_until_ms`` (the lease renewed until then, Redis time)
    is still ahead of ``redis_time`` (Redis ``TIME``: seconds, microseconds; a cluster client
    may answer it per node, as a mapping)."""
    if until_ms is None:
        return False
    if isinstance(redis_time, Mapping):
        redis_time = next(iter(redis_time.values()), None)
    if not isinstance(redis_time, Sequence):
        return False
    try:
        until = int(until_ms)
        now_ms = int(redis_time[0]) * 1000 + int(redis_time[1]) // 1000
    except (TypeError, ValueError, IndexError):
        return False
    return until > now_ms


def no_writer_warning(table: str) -> str:
    """The one line a producer logs when no live writer holds ``table``'s lease."""
    return (
        f"no writer is serving table {table!r}: records wait in Redis until one starts "
        f"(`lancequeue writer --table {table}`), and fail at their deadline if none does; "
        f"check the table name (`lancequeue status` lists the tables Redis holds)"
    )
