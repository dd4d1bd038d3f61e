"""Writer settings, declared once: the ``Writer`` class takes them as keywords and the CLI
generates one option and one environment variable per field from the metadata below."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lancequeue.common.connection import DATA_DIR_DEFAULT, default_data_dir
from lancequeue.common.errors import ConfigError
from lancequeue.common.keys import check_table_name
from lancequeue.common.redis_url import parse_redis_url
from lancequeue.writer.bad_vectors import BadVectorPolicy
from lancequeue.writer.compaction import CompactionPolicy
from lancequeue.writer.imports import load_imports
from lancequeue.writer.indexing import IndexPolicy
from lancequeue.writer.keyed import TableKey


def _option(flag: str, help: str) -> dict[str, str]:
    return {"flag": flag, "help": help}


def parse_storage_options(pairs: Iterable[str]) -> dict[str, str]:
    """``["KEY=VALUE", ...]`` as a dict; raises :class:`ConfigError` naming a malformed one."""
    options: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"storage option {pair!r} is not KEY=VALUE")
        options[key.strip()] = value
    return options


def _columns(name: str, value: Any) -> tuple[str, ...]:
    """Column names given as a string (comma-separated) or a list of them."""
    names = value.split(",") if isinstance(value, str) else value
    if not isinstance(names, Iterable) or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"{name} must be column names, got {value!r}")
    columns = tuple(n.strip() for part in names for n in part.split(",") if n.strip())
    if len(set(columns)) != len(columns):
        raise ConfigError(f"{name} names a column twice: {value!r}")
    return columns


@dataclass(frozen=True)
class WriterSettings:
    """Everything a writer needs to own one table."""

    table: str = field(metadata=_option("--table", "Table to write (one stream per table)."))
    redis_url: str | None = field(
        default=None,
        repr=False,  # may hold a password
        metadata=_option("--redis", "Redis URL. Default: the embedded server of --data-dir."),
    )
    db_uri: str | None = field(
        default=None,
        metadata=_option(
            "--db", "LanceDB URI of the database holding the table. Default: DATA_DIR/db."
        ),
    )
    storage_options: Mapping[str, str] | None = field(
        default=None,
        repr=False,  # may hold credentials
        metadata=_option(
            "--storage-option",
            "KEY=VALUE passed to Lance's object store for --db (e.g. aws_endpoint=http://..., "
            "aws_access_key_id=..., allow_http=true); repeat it for several. Default: Lance "
            "reads its environment (AWS_*, GOOGLE_*, AZURE_*).",
        ),
    )
    data_dir: Path | None = field(
        default=None,
        metadata=_option(
            "--data-dir",
            f"Data directory (embedded Redis, default database). {DATA_DIR_DEFAULT}",
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
    upsert_key: tuple[str, ...] = field(
        default=(),
        metadata=_option(
            "--upsert-key",
            "Key column(s) of the table (integers or strings; several comma-separated): every "
            "record is an upsert by its key (the one sent last wins) and deletes go by it. "
            "Default: records are appended.",
        ),
    )
    delete_key: tuple[str, ...] = field(
        default=(),
        metadata=_option(
            "--delete-key",
            "Key column(s) deletes go by, on a table whose records are appended (several "
            "comma-separated). Default: --upsert-key's, else deletes are refused.",
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
    lease_ms: int = field(
        default=4000,
        metadata=_option(
            "--lease-ms",
            "Expiry of the writer's lease, renewed every quarter of it: a standby writer takes "
            "the table over within this long after the writer dies or hangs.",
        ),
    )
    flush_retries: int = field(
        default=3,
        metadata=_option(
            "--flush-retries",
            "Retries of an append that failed for a transient reason (I/O, object store, "
            "commit conflict) before its records are answered WriteFailed.",
        ),
    )
    retry_backoff_ms: int = field(
        default=200,
        metadata=_option(
            "--retry-backoff-ms", "Wait before the first retry of an append; doubles each time."
        ),
    )
    max_deliveries: int = field(
        default=5,
        metadata=_option(
            "--max-deliveries",
            "An entry read this many times without being settled (it keeps killing the "
            "writer) goes to the dead-letter stream.",
        ),
    )
    max_record_bytes: int = field(
        default=1024 * 1024,
        metadata=_option("--max-record-bytes", "Largest encoded record accepted."),
    )
    max_batch_bytes: int = field(
        default=64 * 1024 * 1024,
        metadata=_option(
            "--max-batch-bytes", "Flush as soon as the records in hand reach this many bytes."
        ),
    )
    compact_every: str = field(
        default="16",
        metadata=_option(
            "--compact-every",
            "Compact once this many fragments of about one size pile up (size-tiered: each "
            "row is rewritten a few times at most), checked after every flush (while batches "
            "of an append table are full, four times as many, until the backlog is drained); "
            "or 30s: check at most every 30 seconds; 0: never.",
        ),
    )
    reindex_rows: int = field(
        default=10_000,
        metadata=_option(
            "--reindex-rows",
            "Bring the table's indexes (vector, full-text, scalar) up to date beside the "
            "appends once this many rows were committed since the last time, and whenever "
            "the table has been quiet for --reindex-quiet-ms; 0: never.",
        ),
    )
    reindex_quiet_ms: int = field(
        default=3000,
        metadata=_option(
            "--reindex-quiet-ms",
            "Time without a commit after which any unindexed row is indexed.",
        ),
    )
    vector_index: str | None = field(
        default=None,
        metadata=_option(
            "--vector-index",
            "Vector column to create an IVF_PQ index on once the table holds enough rows to "
            "train one (4,096), kept up to date like the others. Default: only the indexes the "
            "table has.",
        ),
    )
    keep_versions: int = field(
        default=16,
        metadata=_option(
            "--keep-versions",
            "Table versions kept after each compaction; older ones (and the files only they "
            "use) are deleted. At least 2.",
        ),
    )
    metadata_cache_bytes: int = field(
        default=8 * 1024 * 1024,
        metadata=_option(
            "--metadata-cache-bytes",
            "Size of Lance's metadata cache (manifests, data files' metadata); it fills as the "
            "table grows, so it is most of what the writer's memory grows by.",
        ),
    )
    summary_every_s: int = field(
        default=60,
        metadata=_option(
            "--summary-every-s",
            "Log a one-line summary of what the writer did this often (0: never).",
        ),
    )
    metrics_port: int = field(
        default=0,
        metadata=_option(
            "--metrics-port", "Serve Prometheus metrics on this port at /metrics (0: off)."
        ),
    )
    metrics_host: str = field(
        default="127.0.0.1",
        metadata=_option(
            "--metrics-host",
            "Address the metrics are served on: 127.0.0.1 (this machine only), or 0.0.0.0 "
            "(every interface) for a Prometheus on another host or container.",
        ),
    )
    on_bad_vectors: str = field(
        default="error",
        metadata=_option(
            "--on-bad-vectors",
            "What to do with a bad vector (NaN values or the wrong length), as LanceDB's "
            "table.add(on_bad_vectors=...): error (reject the record), drop (reject it as "
            "dropped), fill (replace NaN and missing values with --fill-value, cut a longer "
            "vector), null (write a null vector). As in LanceDB, drop, fill and null apply to "
            "the columns an embedding function computes and those named vector or embedding; "
            "NaN elsewhere is always rejected.",
        ),
    )
    fill_value: float = field(
        default=0.0,
        metadata=_option("--fill-value", "The value --on-bad-vectors fill writes."),
    )
    imports: tuple[str, ...] = field(
        default=(),
        metadata=_option(
            "--import",
            "Module imported before the table is opened, e.g. one registering custom LanceDB "
            "embedding functions the table uses; repeat it for several. The current "
            "directory is on the module path.",
        ),
    )

    burst: bool = field(
        default=False,
        metadata=_option(
            "--burst",
            "Serve until the table's queue is empty (records earlier writers left pending "
            "included), then flush, answer and exit 0: for batch jobs and tests. If a live "
            "writer holds the table, exit 0 at once: it serves the queue.",
        ),
    )

    def __post_init__(self) -> None:
        check_table_name(self.table)
        if self.redis_url is not None:
            parse_redis_url(self.redis_url)  # raises ConfigError, never showing a password
        if not isinstance(self.metrics_host, str) or not self.metrics_host.strip():
            raise ConfigError(f"metrics_host must be an address, got {self.metrics_host!r}")
        BadVectorPolicy(self.on_bad_vectors, self.fill_value)  # raises ConfigError if bad
        object.__setattr__(self, "fill_value", float(self.fill_value))
        if isinstance(self.imports, str) or not all(isinstance(m, str) for m in self.imports):
            raise ConfigError(f"imports must be a list of module names, got {self.imports!r}")
        object.__setattr__(self, "imports", tuple(self.imports))
        for name in ("upsert_key", "delete_key"):
            object.__setattr__(self, name, _columns(name, getattr(self, name)))
        if self.upsert_key and self.delete_key and self.delete_key != self.upsert_key:
            raise ConfigError(
                "delete_key differs from upsert_key: an upsert table deletes by its upsert key"
            )
        _ = self.table_key  # raises ConfigError for a column Lance cannot join on
        # Before anything opens the table: the modules may register its embedding functions.
        load_imports(self.imports)
        if self.storage_options is not None:
            if not isinstance(self.storage_options, Mapping) or not all(
                isinstance(key, str) and isinstance(value, str)
                for key, value in self.storage_options.items()
            ):
                raise ConfigError(
                    "storage_options must map option names to strings, "
                    f"got {type(self.storage_options).__name__}"
                )
            object.__setattr__(self, "storage_options", dict(self.storage_options))
        for name in (
            "coalesce_ms",
            "max_batch",
            "max_queue_size",
            "reply_ttl_ms",
            "max_block_ms",
            "lease_ms",
            "retry_backoff_ms",
            "max_deliveries",
            "max_record_bytes",
            "max_batch_bytes",
            "metadata_cache_bytes",
            "reindex_quiet_ms",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(self.compact_every, int) and not isinstance(self.compact_every, bool):
            object.__setattr__(self, "compact_every", str(self.compact_every))
        CompactionPolicy.parse(self.compact_every)
        if not isinstance(self.keep_versions, int) or self.keep_versions < 2:
            raise ConfigError(
                f"keep_versions must be at least 2 (the newest append's watermark is kept), "
                f"got {self.keep_versions!r}"
            )
        for name in ("flush_retries", "summary_every_s", "metrics_port", "reindex_rows"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ConfigError(f"{name} must be a non-negative integer, got {value!r}")
        if self.max_record_bytes > self.max_batch_bytes:
            raise ConfigError(
                f"max_record_bytes ({self.max_record_bytes}) must not exceed max_batch_bytes "
                f"({self.max_batch_bytes})"
            )
        if self.max_queue_size < self.max_batch:
            raise ConfigError(
                f"max_queue_size ({self.max_queue_size}) must be at least max_batch "
                f"({self.max_batch})"
            )

    @property
    def table_key(self) -> TableKey | None:
        """The table's key columns, if it has any (``keyed.py``)."""
        if self.upsert_key:
            return TableKey(self.upsert_key, upsert=True)
        if self.delete_key:
            return TableKey(self.delete_key, upsert=False)
        return None

    @property
    def index_policy(self) -> IndexPolicy:
        return IndexPolicy(self.reindex_rows, self.reindex_quiet_ms, self.vector_index)

    @property
    def bad_vectors(self) -> BadVectorPolicy:
        return BadVectorPolicy(self.on_bad_vectors, self.fill_value)

    @property
    def resolved_data_dir(self) -> Path:
        return self.data_dir if self.data_dir is not None else default_data_dir()

    @property
    def resolved_db_uri(self) -> str:
        return self.db_uri or str(self.resolved_data_dir / "db")
