"""Indexes that keep up: the writer keeps every index of its table covering the new rows.

Rows appended after an index was built sit in an unindexed tail that every query scans by brute
force until someone optimises the index. Beside the appends (never on their path, as
compaction), the writer brings each index (vector, full-text, scalar) up to date with Lance's
incremental index optimisation, which adds the new rows to it without training it again: once
the rows committed since the last time reach ``--reindex-rows``, and once the table has had no
commit for ``--reindex-quiet-ms``, so an idle table is fully indexed. ``--vector-index COLUMN``
also creates an IVF_PQ index on that column once the table holds enough rows to train one
(with LanceDB's defaults: about the square root of the rows as partitions), which is then kept
up to date the same way. One upkeep runs at a time, never beside a compaction.

Each index's indexed and unindexed rows go to the status hash (``indexes``), for
``lancequeue status`` and the metrics.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from typing import Protocol

import lance
import pyarrow as pa

from lancequeue.common.errors import ConfigError, WriterReplaced
from lancequeue.common.keys import TableKeys
from lancequeue.common.redis_client import REDIS_FAILURES, AsyncRedis
from lancequeue.writer.shutdown import Shutdown
from lancequeue.writer.summary import Summary

logger = logging.getLogger(__name__)

STATUS_FIELD = "indexes"
"""Status hash field: JSON list of each index's name, kind, columns, indexed and unindexed
rows, as the newest upkeep found them."""
VECTOR_INDEX_MIN_ROWS = 4096
"""Rows a table holds before ``--vector-index`` trains an index (IVF needs 256 rows a
partition; fewer rows train a poor one)."""
_WATCH_S = 0.25
"""How often the keeper looks at the time since the last commit."""
_FIRST_BACKOFF_S = 5.0
_LAST_BACKOFF_S = 300.0
"""After failed upkeeps the next waits 5 s, doubling up to 5 minutes, whatever the commits."""


@dataclass(frozen=True)
class IndexPolicy:
    """When to bring the table's indexes up to date."""

    rows: int
    """Rows committed since the last upkeep that call for one; 0: never keep indexes."""
    quiet_ms: int
    """Time without a commit after which any unindexed row calls for one."""
    vector_column: str | None = None
    """Create an IVF_PQ index on this column once the table can train one."""

    @property
    def enabled(self) -> bool:
        return self.rows > 0


@dataclass(frozen=True)
class IndexCoverage:
    """How much of the table an index covers."""

    name: str
    kind: str
    columns: tuple[str, ...]
    indexed_rows: int
    unindexed_rows: int


def index_coverage(dataset: lance.LanceDataset) -> list[IndexCoverage]:
    """Each index of ``dataset`` and the rows (as stored, deleted ones included) of the
    fragments it covers and does not; from the manifest, reading no index."""
    fragments = {f.fragment_id: f.metadata.physical_rows for f in dataset.get_fragments()}
    found: list[IndexCoverage] = []
    for index in dataset.describe_indices():
        covered = {int(fragment) for part in index.segments for fragment in part.fragment_ids}
        found.append(
            IndexCoverage(
                index.name,
                str(index.index_type),
                tuple(index.field_names),
                sum(rows for fragment, rows in fragments.items() if fragment in covered),
                sum(rows for fragment, rows in fragments.items() if fragment not in covered),
            )
        )
    return sorted(found, key=lambda index: index.name)


def vector_index_shape(rows: int, dim: int) -> tuple[int, int]:
    """LanceDB's defaults for an IVF_PQ index: about ``sqrt(rows)`` partitions (at least 256
    rows each), and sub-vectors of 16 dimensions (8, or the whole vector, when ``dim`` does not
    divide)."""
    partitions = max(1, min(round(math.sqrt(rows)), rows // 256))
    for width in (16, 8):
        if dim % width == 0 and dim > width:
            return partitions, dim // width
    return partitions, 1


def check_vector_column(schema: pa.Schema, column: str, table: str) -> int:
    """The dimension of ``column``, a fixed-size list of floats of ``schema``; raises
    ``ConfigError`` otherwise."""
    index = schema.get_field_index(column)
    data_type = schema.field(index).type if index >= 0 else None
    if not (
        data_type is not None
        and pa.types.is_fixed_size_list(data_type)
        and pa.types.is_floating(data_type.value_type)
    ):
        raise ConfigError(
            f"--vector-index {column!r}: table {table!r} has no vector column of that name "
            f"(fixed-size lists of floats: {', '.join(_vectors(schema)) or 'none'})"
        )
    return int(data_type.list_size)


def _vectors(schema: pa.Schema) -> list[str]:
    return [
        field.name
        for field in schema
        if pa.types.is_fixed_size_list(field.type) and pa.types.is_floating(field.type.value_type)
    ]


class IndexedSink(Protocol):
    """What the keeper needs of the table (``table.TableSink``)."""

    name: str

    @property
    def ready(self) -> bool: ...

    def fresh(self) -> lance.LanceDataset: ...


class IndexKeeper:
    """Brings the table's indexes up to date beside the appends (see the module's docstring)."""

    def __init__(
        self,
        policy: IndexPolicy,
        sink: IndexedSink,
        upkeep: asyncio.Lock,
        shutdown: Shutdown,
        summary: Summary,
        status: tuple[AsyncRedis, TableKeys],
    ) -> None:
        self._policy = policy
        self._vector_column = policy.vector_column
        self._sink = sink
        self._upkeep = upkeep
        """Held by each compaction and each index upkeep: one runs at a time."""
        self._shutdown = shutdown
        self._summary = summary
        self._redis, self._keys = status
        self._since = 0  # rows committed since the last upkeep
        self._covering = 0  # the rows the running upkeep was started for
        self._last_commit = time.monotonic()
        self._pending = True  # rows may be unindexed: at start, look once the table is quiet
        self._not_before = 0.0  # after a failed upkeep, the next waits (doubling) until then
        self._backoff_s = 0.0
        self._watching: asyncio.Task[None] | None = None
        self._running: asyncio.Task[None] | None = None
        self._stopped = False
        self.coverage: list[IndexCoverage] = []

    def start(self) -> None:
        """Start watching for quiet (a no-op if keeping indexes is off)."""
        if self._policy.enabled and self._watching is None:
            self._watching = asyncio.create_task(self._watch(), name="lancequeue-indexes")

    def committed(self, rows: int) -> None:
        """After a commit of ``rows`` rows: bring the indexes up to date if enough rows came
        since the last time and no upkeep is running."""
        self._last_commit = time.monotonic()
        self._since += rows
        self._pending = True
        self._run_if_due()

    def _run_if_due(self) -> None:
        """Bring the indexes up to date if enough rows came since the last time (a commit while
        an upkeep runs counts its rows for the next one, which starts when it ends)."""
        due = self._since >= self._policy.rows and time.monotonic() >= self._not_before
        if self._policy.enabled and due and not self._stopped:
            self._run()

    async def stop(self) -> None:
        """Stop watching and wait for a running upkeep (neither raises); start no other."""
        self._stopped = True
        if self._watching is not None:
            self._watching.cancel()
            await asyncio.gather(self._watching, return_exceptions=True)
        if self._running is not None:
            await self._running

    def _run(self) -> None:
        if self._running is None or self._running.done():
            self._covering, self._since = self._since, 0
            self._pending = False
            self._running = asyncio.create_task(self._bring_up_to_date(), name="lancequeue-index")

    async def _watch(self) -> None:
        quiet_s = self._policy.quiet_ms / 1000
        while not self._shutdown.requested.is_set():
            await asyncio.sleep(min(_WATCH_S, quiet_s))
            now = time.monotonic()
            if self._pending and now - self._last_commit >= quiet_s and now >= self._not_before:
                self._run()
            else:  # rows due while an upkeep failed are tried once its backoff is over
                self._run_if_due()

    async def _bring_up_to_date(self) -> None:
        if not self._sink.ready:
            return
        try:
            await self._bring_up_to_date_now()
        finally:  # rows committed meanwhile may be due already: once this task is done
            asyncio.get_running_loop().call_soon(self._run_if_due)

    async def _bring_up_to_date_now(self) -> None:
        try:
            async with self._upkeep:
                if self._shutdown.requested.is_set():
                    return
                started = time.monotonic()
                coverage, created = await asyncio.to_thread(self._bring_up_to_date_sync)
            self.coverage = coverage
            if created or any(index.indexed_rows for index in coverage):
                self._summary.add({"index_upkeeps": 1})
                logger.debug(
                    "indexes of %r up to date in %.2fs: %s",
                    self._sink.name,
                    time.monotonic() - started,
                    ", ".join(f"{i.name} {i.unindexed_rows} unindexed" for i in coverage),
                )
            await self._publish()
            self._backoff_s = 0.0
        except WriterReplaced as exc:
            self._shutdown.replace(exc)
        except Exception as exc:  # housekeeping: never stops the writer
            self._backoff_s = min(max(2 * self._backoff_s, _FIRST_BACKOFF_S), _LAST_BACKOFF_S)
            self._not_before = time.monotonic() + self._backoff_s
            self._pending = True  # a later quiet spell tries again
            self._since += self._covering  # and so do enough rows, once the backoff is over
            if self._backoff_s == _FIRST_BACKOFF_S:  # the first failure of a run: in full
                logger.exception("bringing the indexes of %r up to date failed", self._sink.name)
            else:
                logger.error(
                    "bringing the indexes of %r up to date failed again (next try in %.0fs): %s",
                    self._sink.name,
                    self._backoff_s,
                    exc,
                )

    def _bring_up_to_date_sync(self) -> tuple[list[IndexCoverage], bool]:
        dataset = self._sink.fresh()
        created = self._create_vector_index(dataset)
        if created:
            dataset = self._sink.fresh()
        coverage = index_coverage(dataset)
        if any(index.unindexed_rows for index in coverage):
            dataset.optimize.optimize_indices()
            coverage = index_coverage(self._sink.fresh())
        return coverage, created

    def _create_vector_index(self, dataset: lance.LanceDataset) -> bool:
        """Create the ``--vector-index`` index if it is missing and the table can train it."""
        column = self._vector_column
        if column is None:
            return False
        if any(column in index.field_names for index in dataset.describe_indices()):
            return False
        try:
            dim = check_vector_column(dataset.schema, column, self._sink.name)
        except ConfigError as exc:  # a table the first batch made without it: said once
            logger.error("%s; no vector index is created", exc)
            self._vector_column = None
            return False
        rows = dataset.count_rows()
        if rows < VECTOR_INDEX_MIN_ROWS:
            return False
        partitions, sub_vectors = vector_index_shape(rows, dim)
        logger.info(
            "creating an IVF_PQ index on %r.%s (%d rows: %d partitions, %d sub-vectors)",
            self._sink.name,
            column,
            rows,
            partitions,
            sub_vectors,
        )
        dataset.create_index(
            column, "IVF_PQ", num_partitions=partitions, num_sub_vectors=sub_vectors
        )
        return True

    async def _publish(self) -> None:
        value = json.dumps([asdict(index) for index in self.coverage], separators=(",", ":"))
        try:
            await self._redis.hset(self._keys.writer, STATUS_FIELD, value)
        except REDIS_FAILURES as exc:  # the next upkeep publishes again
            logger.warning("publishing index coverage of %r: %s", self._sink.name, exc)
