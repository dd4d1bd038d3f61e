"""Producer settings, declared once with their defaults and units."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lancequeue.common.errors import ConfigError
from lancequeue.common.keys import check_table_name


@dataclass(frozen=True)
class ProducerSettings:
    """How a producer reaches Redis and how long it waits."""

    table: str
    """The LanceDB table the records go to (one stream per table)."""
    redis_url: str | None = None
    """Redis URL; None means ``$LANCEQUEUE_REDIS``, else the embedded server of ``data_dir``."""
    data_dir: Path | str | None = None
    """Data directory of the embedded Redis server; None means the default data directory."""
    timeout_ms: int = 60_000
    """Default wait of ``write``/``write_many`` for the writer's answer, and of ``enqueue`` for
    room in a full queue."""
    close_timeout_ms: int = 30_000
    """How long ``close()`` waits for outstanding records to be answered."""
    chunk_records: int = 256
    """Records sent per enqueue-script call (bounds one Redis command's size)."""
    room_recheck_ms: int = 1000
    """While the queue is full, producers wait for the writer's flush message; they re-check
    this often even without one (bounds a missed message, and how long ``close()`` waits for an
    enqueue that is waiting for room)."""

    def __post_init__(self) -> None:
        check_table_name(self.table)
        if self.data_dir is not None and not isinstance(self.data_dir, Path):
            object.__setattr__(self, "data_dir", Path(self.data_dir))
        for name in ("timeout_ms", "close_timeout_ms", "chunk_records", "room_recheck_ms"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
