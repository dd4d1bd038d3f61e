"""The LanceDB table the writer owns: open or create it, append one batch per flush."""

from __future__ import annotations

import logging
from typing import Any

import lancedb
import pyarrow as pa

from lancequeue.common.errors import ConfigError
from lancequeue.writer.arrow_batch import BatchBuilder, Records
from lancequeue.writer.loading import load_object
from lancequeue.writer.schema_inference import infer_schema

logger = logging.getLogger(__name__)


def resolve_schema(spec: Any) -> pa.Schema | None:
    """A pyarrow schema from a schema, a LanceModel class, or ``module:attr`` naming either."""
    if spec is None:
        return None
    if isinstance(spec, str):
        spec = load_object(spec, "--schema")
    if isinstance(spec, pa.Schema):
        return spec
    to_arrow = getattr(spec, "to_arrow_schema", None)
    if callable(to_arrow):
        schema = to_arrow()
        if isinstance(schema, pa.Schema):
            return schema
    raise ConfigError(f"schema must be a pyarrow.Schema or a LanceModel, got {spec!r}")


class TableSink:
    """Appends batches to one table. The table is created on first use when it does not exist:
    from the configured schema, else from the first batch's records."""

    def __init__(self, db: lancedb.AsyncConnection, name: str, schema: pa.Schema | None) -> None:
        self._db = db
        self.name = name
        self._configured_schema = schema
        self._table: lancedb.AsyncTable | None = None
        self._builder: BatchBuilder | None = None
        self.rows = 0
        self.version = 0

    @classmethod
    async def open(
        cls, db_uri: str, name: str, schema: pa.Schema | None, metadata_cache_bytes: int
    ) -> TableSink:
        session = lancedb.Session(metadata_cache_size_bytes=metadata_cache_bytes)
        db = await lancedb.connect_async(db_uri, session=session)
        sink = cls(db, name, schema)
        try:
            existing = await db.open_table(name)
        except ValueError:  # LanceDB's "Table 'x' was not found"
            existing = None
        if existing is not None:
            await sink._use(existing)
        elif sink._configured_schema is not None:
            await sink._use(
                await db.create_table(name, schema=sink._configured_schema, exist_ok=True)
            )
        return sink

    async def _use(self, table: lancedb.AsyncTable) -> None:
        self._table = table
        self._builder = BatchBuilder(await table.schema())
        self.rows = await table.count_rows()
        self.version = await table.version()
        logger.info("table %r: %d rows, version %d", self.name, self.rows, self.version)

    async def prepare(self, records: Records) -> tuple[pa.Table | None, dict[int, str]]:
        """The batch's Arrow table and the rejected records (index → reason)."""
        if self._builder is None:
            schema = infer_schema(records)
            if len(schema) == 0:
                reason = (
                    f"table {self.name!r} does not exist and these records have no values to "
                    "define its columns; give the writer a schema"
                )
                return None, dict.fromkeys(range(len(records)), reason)
            logger.info(
                "creating table %r with schema inferred from the first batch: %s", self.name, schema
            )
            await self._use(await self._db.create_table(self.name, schema=schema, exist_ok=True))
        assert self._builder is not None
        return self._builder.build(records)

    async def append(self, batch: pa.Table) -> None:
        """One commit for the whole batch."""
        assert self._table is not None
        result = await self._table.add(batch)
        self.rows += batch.num_rows
        self.version = result.version
