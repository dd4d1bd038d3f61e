"""Writer settings, declared once: the ``Writer`` class takes them as keywords and the CLI
generates one option and one environment variable per field from the metadata below."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lancequeue.common.connection import default_data_dir
from lancequeue.common.errors import ConfigError
from lancequeue.common.keys import check_table_name


def _option(flag: str, help: str) -> dict[str, str]:
    return {"flag": flag, "help": help}


@dataclass(frozen=True)
class WriterSettings:
    """Everything a writer needs to own one table."""

    table: str = field(metadata=_option("--table", "Table to write (one stream per table)."))
    redis_url: str | None = field(
        default=None,
        metadata=_option("--redis", "Redis URL. Default: the embedded server of --data-dir."),
    )
    db_uri: str | None = field(
        default=None,
        metadata=_option(
            "--db", "LanceDB URI of the database holding the table. Default: DATA_DIR/db."
        ),
    )
    data_dir: Path | None = field(
        default=None,
        metadata=_option(
            "--data-dir",
            "Data directory (embedded Redis, default database). "
            "Default: $XDG_DATA_HOME/lancequeue.",
        ),
    )
    schema: Any = field(
        default=None,
        metadata=_option(
            "--schema",
            "module:attr of a pyarrow schema or LanceModel used to create the table. "
            "Default: the first batch defines it.",
        ),
    )
    coalesce_ms: int = field(
        default=100,
        metadata=_option(
            "--coalesce-ms", "Flush this many ms after the first record of a batch arrived."
        ),
    )
    max_batch: int = field(
        default=128,
        metadata=_option("--max-batch", "Flush as soon as this many records are in hand."),
    )
    max_queue_size: int = field(
        default=4096,
        metadata=_option("--max-queue-size", "Records the stream may hold before producers wait."),
    )
    on_flushed: str | Callable[..., Any] | None = field(
        default=None,
        metadata=_option(
            "--on-flushed",
            "module:function called with the records of each successful flush, "
            "before producers are answered.",
        ),
    )
    reply_ttl_ms: int = field(
        default=600_000,
        metadata=_option("--reply-ttl-ms", "Expiry of a reply list no producer reads any more."),
    )
    max_block_ms: int = field(
        default=250,
        metadata=_option(
            "--max-block-ms", "Longest blocking read; bounds how long a stop request waits."
        ),
    )
    heartbeat_ms: int = field(
        default=1000,
        metadata=_option(
            "--heartbeat-ms", "Interval of the liveness heartbeat `lancequeue status` reads."
        ),
    )
    metadata_cache_bytes: int = field(
        default=64 * 1024 * 1024,
        metadata=_option(
            "--metadata-cache-bytes", "Size of Lance's metadata cache (one manifest per version)."
        ),
    )

    def __post_init__(self) -> None:
        check_table_name(self.table)
        for name in (
            "coalesce_ms",
            "max_batch",
            "max_queue_size",
            "reply_ttl_ms",
            "max_block_ms",
            "heartbeat_ms",
            "metadata_cache_bytes",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.max_queue_size < self.max_batch:
            raise ConfigError(
                f"max_queue_size ({self.max_queue_size}) must be at least max_batch "
                f"({self.max_batch})"
            )

    @property
    def resolved_data_dir(self) -> Path:
        return self.data_dir if self.data_dir is not None else default_data_dir()

    @property
    def resolved_db_uri(self) -> str:
        return self.db_uri or str(self.resolved_data_dir / "db")
