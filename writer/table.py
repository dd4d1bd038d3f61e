"""The LanceDB table the writer owns: open or create it, fence it, commit one batch at a time.

The table is LanceDB's: ``<db_uri>/<name>.lance``, created empty as LanceDB's ``create_table``
would, so LanceDB handles on it see every row. Batches go through Lance directly (appends:
``write_fragments`` then ``LanceDataset.commit``; by key: ``keyed.py``), not LanceDB, because
only a Lance transaction carries the watermark atomically with the data.

The sink is opened only once its writer holds the lease, and fences the table then (or as it
creates it; ``fencing.py``), so what it reads of the table (the watermark) is what the table
holds after every earlier writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lance
import pyarrow as pa
from lance import LanceOperation, Transaction
from lance.optimize import Compaction

from lancequeue.common.errors import ConfigError
from lancequeue.writer.arrow_batch import BatchBuilder, Records, Row
from lancequeue.writer.bad_vectors import BadVectorPolicy
from lancequeue.writer.compaction import plan_rewrites
from lancequeue.writer.fencing import check_fence, commit_fenced, fence, fence_of
from lancequeue.writer.keyed import Key, TableKey, commit_changes
from lancequeue.writer.lease import TokenSource
from lancequeue.writer.schema_inference import infer_schema
from lancequeue.writer.watermark import Watermark

logger = logging.getLogger(__name__)


class TableSink:
    """Appends batches to one table for the writer holding fencing token ``token``, each commit
    carrying its watermark. The table is created on first use when it does not exist: from the
    configured schema, else from the first batch's records."""

    def __init__(
        self,
        uri: str,
        name: str,
        schema: pa.Schema | None,
        metadata_cache_bytes: int,
        token: int,
        consumer: str,
        storage_options: Mapping[str, str] | None = None,
        bad_vectors: BadVectorPolicy | None = None,
        key: TableKey | None = None,
    ) -> None:
        self.uri = uri
        self.key = key
        """The table's key columns (``--upsert-key`` or ``--delete-key``), if it has any."""
        self._key_builder: BatchBuilder | None = None
        self._bad_vectors = bad_vectors
        self._storage_options = dict(storage_options) if storage_options else None
        self.name = name
        self._configured_schema = schema
        self._session = lance.Session(metadata_cache_size_bytes=metadata_cache_bytes)  # type: ignore[attr-defined]
        self._dataset: lance.LanceDataset | None = None
        self._builder: BatchBuilder | None = None
        self._no_table_reason = ""
        self._fence_token = token
        self._consumer = consumer
        self._last_append_version = 0
        self._committing = threading.RLock()
        """Held by each commit, an append's or a compaction's: this writer's commits never race
        one another. (A compaction's ``Rewrite`` that raced a stream of appends could lose to
        them again and again, each retry reading more transactions, until Lance gave up.)"""
        self.rows = 0
        self.version = 0

    @classmethod
    async def open(
        cls,
        db_uri: str,
        name: str,
        schema: pa.Schema | None,
        metadata_cache_bytes: int,
        lease: TokenSource,
        consumer: str,
        storage_options: Mapping[str, str] | None = None,
        bad_vectors: BadVectorPolicy | None = None,
        key: TableKey | None = None,
    ) -> tuple[TableSink, Watermark | None]:
        """The sink of table ``name`` in the database at ``db_uri`` (``storage_options`` go to
        Lance's object store) for the writer holding ``lease``: the table is opened and fenced
        if it exists, created (and fenced) if a schema is given. Returns it with the newest
        watermark of the writers before (None if none). Raises ``WriterReplaced`` if a newer
        writer fenced the table meanwhile."""
        sink = cls(
            table_uri(db_uri, name),
            name,
            schema,
            metadata_cache_bytes,
            lease.token,
            consumer,
            storage_options,
            bad_vectors,
            key,
        )
        existing = await asyncio.to_thread(sink._open_existing)
        if existing is None and sink._configured_schema is None:
            return sink, None  # created by the first batch
        if existing is None:
            assert sink._configured_schema is not None
            existing = await asyncio.to_thread(sink._create, sink._configured_schema)
        recorded = fence_of(existing)
        if recorded >= lease.token:
            # Tokens handed out by a Redis that has since lost its data: this writer holds
            # the lease, so no writer is newer; take a token above the table's.
            sink._fence_token = await lease.raise_token(recorded)
        sink._dataset = existing
        watermark = await asyncio.to_thread(sink._fence_sync)
        await sink._use(sink._latest())
        return sink, watermark

    def _open_existing(self) -> lance.LanceDataset | None:
        try:
            return self._open()
        except ValueError as exc:  # Lance's "Dataset at path ... was not found"
            if "not found" not in str(exc):
                raise
            return None

    def _open(self) -> lance.LanceDataset:
        return lance.dataset(self.uri, session=self._session, storage_options=self._storage_options)

    def _create(self, schema: pa.Schema) -> lance.LanceDataset:
        """Create the table, empty, as LanceDB's ``create_table`` would (or open it if another
        process just did)."""
        try:
            lance.write_dataset(
                schema.empty_table(),
                self.uri,
                mode="create",
                storage_options=self._storage_options,
            )
        except (OSError, ValueError):
            existing = self._open_existing()
            if existing is None:
                raise
            return existing
        created = self._open_existing()
        assert created is not None
        return created

    async def _use(self, dataset: lance.LanceDataset) -> None:
        if self.key is not None:
            self.key.check(dataset.schema, self.name)
            self._key_builder = BatchBuilder(self.key.key_schema(dataset.schema))
        self._dataset = dataset
        self._builder = BatchBuilder(dataset.schema, self._bad_vectors)
        self.rows = await asyncio.to_thread(dataset.count_rows)
        self.version = dataset.version
        logger.info("table %r: %d rows, version %d", self.name, self.rows, self.version)

    # -- takeover ----------------------------------------------------------------------------

    def _fence_sync(self) -> Watermark | None:
        """Record this writer's token in the table (``fencing.fence``); return the newest
        watermark as the table holds it once fenced."""
        self._opened()
        self._dataset, watermark = fence(
            self._latest, self._fence_token, self._consumer, self.name, self._storage_options
        )
        self.version = self._dataset.version
        return watermark

    def _opened(self) -> lance.LanceDataset:
        """The handle on the table; only ever asked for once the table exists (``ready``)."""
        if self._dataset is None:
            raise RuntimeError(f"table {self.name!r} is not open: it does not exist yet")
        return self._dataset

    def _latest(self) -> lance.LanceDataset:
        """A handle on the table's newest version. A new one: the handle it is made from may be
        writing data files on another thread meanwhile (``write``), so it is never changed."""
        dataset = self._opened()
        return dataset.checkout_version(dataset.latest_version)

    def _check_fence(self, dataset: lance.LanceDataset) -> None:
        check_fence(dataset, self._fence_token, self.name)

    def fresh(self) -> lance.LanceDataset:
        """A handle of its own on the newest version, once no newer writer fenced the table
        (else ``WriterReplaced``): for upkeep beside the appends."""
        dataset = self._open()
        self._check_fence(dataset)
        return dataset

    # -- appends -----------------------------------------------------------------------------

    async def ensure_table(self, records: Records) -> Watermark | None:
        """Create the table, if it does not exist yet, with the schema these records define,
        and fence it. Returns the watermark found in it if another writer created it first
        (a writer before this one, that committed before it was fenced), else None. Records
        that define no column create nothing: ``build`` rejects them."""
        if self._builder is not None:
            return None
        schema = infer_schema(records)
        if len(schema) == 0:
            self._no_table_reason = (
                f"table {self.name!r} does not exist and these records define no column a "
                "table can hold (no values, or none a column type fits); give the writer "
                "a schema"
            )
            return None
        if self.key is not None:
            try:
                self.key.check(schema, self.name)
            except ConfigError as exc:
                self._no_table_reason = f"table {self.name!r} does not exist, and {exc}"
                return None
        logger.info(
            "creating table %r with schema inferred from the first batch: %s", self.name, schema
        )
        self._dataset = await asyncio.to_thread(self._create, schema)
        watermark = await asyncio.to_thread(self._fence_sync)
        await self._use(self._latest())
        return watermark

    @property
    def schema(self) -> pa.Schema | None:
        """The table's schema; None while the table does not exist."""
        return None if self._dataset is None else self._dataset.schema

    @property
    def ready(self) -> bool:
        """Whether the table exists (else the first batch's records define it)."""
        return self._builder is not None

    async def build(self, rows: Sequence[Row]) -> tuple[pa.Table | None, dict[int, str]]:
        """The batch's Arrow table and the rejected records (index → reason). Raises what the
        table's embedding functions raise."""
        builder = self._builder
        if builder is None:
            return None, dict.fromkeys(range(len(rows)), self._no_table_reason)
        if builder.computes:  # an embedding model must not hold the event loop (and the lease)
            return await asyncio.to_thread(builder.build_rows, rows)
        return builder.build_rows(rows)

    def build_keys(self, records: Records) -> tuple[pa.Table | None, dict[int, str]]:
        """Deletes' keys as a table of the key columns, and the rejected ones (index → why)."""
        if self._key_builder is None or self.key is None:
            reason = f"table {self.name!r} has no key columns (--upsert-key or --delete-key)"
            return None, dict.fromkeys(range(len(records)), reason)
        refused = {i: why for i, r in enumerate(records) if (why := self.key.misnamed(r))}
        named = [index for index in range(len(records)) if index not in refused]
        table, bad = self._key_builder.build([records[index] for index in named])
        refused.update((named[index], f"delete: {why}") for index, why in bad.items())
        return table, refused

    async def merge(
        self, rows: pa.Table | None, deletes: list[Key], watermark: Watermark | None
    ) -> tuple[int, dict[str, int]]:
        """Upsert ``rows`` (an upsert table's) and delete the rows of ``deletes`` in one commit
        (with ``watermark`` if given) on the newest version (``keyed.py``); returns the version
        it made and Lance's counts. Raises ``WriterReplaced`` once a newer writer fenced it."""
        return await asyncio.to_thread(self._merge_sync, rows, deletes, watermark)

    def _merge_sync(
        self, rows: pa.Table | None, deletes: list[Key], watermark: Watermark | None
    ) -> tuple[int, dict[str, int]]:
        assert self.key is not None
        properties = (
            {} if watermark is None else watermark.properties(self._fence_token, self._consumer)
        )
        with self._committing:
            dataset, stats = commit_changes(
                self._opened(),
                (self._latest, self._check_fence),
                self._storage_options,
                self.key,
                (rows, deletes, properties),
            )
        self._dataset = dataset
        self.version = dataset.version
        if watermark is not None:  # cleanup keeps the newest commit a crash would read
            self._last_append_version = dataset.version
        self.rows += int(stats.get("num_inserted_rows", 0)) - int(stats.get("num_deleted_rows", 0))
        return dataset.version, stats

    async def write(self, batch: pa.Table) -> list[Any]:
        """Write the batch's data files (fragments), not yet part of the table. Raises what
        the table refuses the data with, or ``WriterReplaced`` if a newer writer fenced it."""
        return await asyncio.to_thread(self._write_sync, batch)

    def _write_sync(self, batch: pa.Table) -> list[Any]:
        dataset = self._opened()
        self._check_fence(dataset)
        return list(
            lance.fragment.write_fragments(
                batch, dataset, session=self._session, storage_options=self._storage_options
            )
        )

    async def commit(self, fragments: list[Any], rows: int, watermark: Watermark) -> int:
        """Add written fragments holding ``rows`` rows to the table in one commit carrying
        ``watermark``; returns the version it made. Raises ``WriterReplaced`` if a newer
        writer fenced the table."""
        return await asyncio.to_thread(self._commit_sync, fragments, rows, watermark)

    def _commit_sync(self, fragments: list[Any], rows: int, watermark: Watermark) -> int:
        dataset = self._opened()
        properties = watermark.properties(self._fence_token, self._consumer)
        with self._committing:
            dataset = commit_fenced(
                dataset,
                lambda base: Transaction(
                    read_version=base.version,
                    operation=LanceOperation.Append(fragments),
                    transaction_properties=properties,
                ),
                (self._latest, self._check_fence),
                self._storage_options,
                f"append to {self.name!r}",
            )
        self._dataset = dataset
        self.rows += rows
        self.version = self._last_append_version = dataset.version
        return dataset.version

    def fragment_rows(self) -> list[int]:
        """The row count of each of the table's fragments (from the manifest in memory)."""
        if self._dataset is None:
            return []
        return [fragment.metadata.physical_rows for fragment in self._dataset.get_fragments()]

    async def compact(
        self, target_rows: int, keep_versions: int, commit_rows: int
    ) -> list[int] | None:
        """Merge fragments under ``target_rows`` rows into fragments of about that many (one
        Lance ``Rewrite`` commit, copying the data pages as they are where Lance can), then
        delete all but the newest ``keep_versions`` versions (at least 2, so the newest
        append's watermark stays readable) and the files only they used. One commit merges the
        oldest of them, up to ``commit_rows`` source rows (or one Lance task's, if that holds
        more): a large merge is several short compactions, not one long one. Safe to run
        while ``write`` and ``commit`` run. Returns the row counts of the fragments of the
        table's newest version then, or None if there was nothing Lance could merge."""
        return await asyncio.to_thread(self._compact_sync, target_rows, keep_versions, commit_rows)

    def _compact_sync(
        self, target_rows: int, keep_versions: int, commit_rows: int
    ) -> list[int] | None:
        # A handle of its own: appends go on meanwhile with the writer's, and Lance commits
        # the Rewrite over them (they touch other fragments). A fence committed since the plan
        # stops it: checked just before the commit, and Lance refuses a Rewrite planned before
        # a Merge, so a writer replaced meanwhile cannot commit it even if the check races.
        # Lance does not rebase a Rewrite over a merge or a delete of its rows: on a table with
        # key columns, the commits wait from the plan to the commit.
        try:
            with self._committing if self.key is not None else contextlib.nullcontext():
                dataset = self.fresh()
                planned = plan_rewrites(dataset, target_rows, commit_rows)
                if planned is None:
                    return None  # e.g. the small fragments are not adjacent
                rewrites, options = planned
                with self._committing:
                    self._check_fence(self._open())
                    metrics = Compaction.commit(dataset, rewrites, options)
        except OSError as exc:
            self._check_fence(self._open())  # replaced: say so; else a plain failure
            raise OSError(f"compaction of {self.name!r} was not committed: {exc}") from exc
        self.version = max(self.version, dataset.version)
        # Never the newest append, whose watermark a crash would need: two compactions in a
        # row would otherwise push it out of a small window.
        dataset.checkout_latest()  # type: ignore[no-untyped-call]
        newest_append = self._last_append_version or dataset.version
        retain = max(2, keep_versions, dataset.version - newest_append + 1)
        cleaned = dataset.cleanup_old_versions(
            retain_versions=retain, error_if_tagged_old_versions=False
        )
        logger.debug(  # routine upkeep: counted in the writer's periodic summary
            "compacted %r: %d fragments into %d (version %d); removed %d old versions",
            self.name,
            metrics.fragments_removed,
            metrics.fragments_added,
            self.version,
            cleaned.old_versions,
        )
        dataset.checkout_latest()  # type: ignore[no-untyped-call]
        return [fragment.metadata.physical_rows for fragment in dataset.get_fragments()]


def table_uri(db_uri: str, name: str) -> str:
    """Where LanceDB keeps table ``name`` of the database at ``db_uri``."""
    if "://" not in db_uri:
        db_uri = str(Path(db_uri).expanduser().resolve())
    return f"{db_uri.rstrip('/')}/{name}.lance"
