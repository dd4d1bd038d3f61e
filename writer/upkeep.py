"""The table's upkeep beside the appends: compaction (``compaction.py``) and its indexes
(``indexing.py``), one at a time, never on an append's path."""

from __future__ import annotations

import asyncio

from lancequeue.common.keys import TableKeys
from lancequeue.common.redis_client import AsyncRedis
from lancequeue.writer.compaction import CompactionPolicy, Compactor
from lancequeue.writer.indexing import IndexKeeper
from lancequeue.writer.settings import WriterSettings
from lancequeue.writer.shutdown import Shutdown
from lancequeue.writer.summary import Summary
from lancequeue.writer.table import TableSink


class Upkeep:
    """Compacts the table and keeps its indexes up to date as its writer's settings say."""

    def __init__(
        self,
        settings: WriterSettings,
        sink: TableSink,
        shutdown: Shutdown,
        summary: Summary,
        status: tuple[AsyncRedis, TableKeys],
    ) -> None:
        one_at_a_time = asyncio.Lock()
        self._max_batch = settings.max_batch
        # A table with key columns holds its commits while a compaction runs (``table.py``):
        # larger merges would hold them longer, so only append tables defer compaction while
        # a backlog drains.
        self._defers = sink.key is None
        self.compactor = Compactor(
            CompactionPolicy.parse(settings.compact_every),
            sink,
            settings.max_batch,
            settings.keep_versions,
            shutdown,
            summary,
            one_at_a_time,
        )
        self.indexes = IndexKeeper(
            settings.index_policy, sink, one_at_a_time, shutdown, summary, status
        )

    def start(self) -> None:
        self.indexes.start()

    def committed(self, rows: int, added: int | None) -> None:
        """After a commit of ``rows`` rows that added ``added`` fragments at the end of the
        table (None: a merge or delete may have changed others): compact or index if it is
        time."""
        self.compactor.committed(full=self._defers and rows >= self._max_batch, added=added)
        self.indexes.committed(rows)

    async def stop(self) -> None:
        """Wait for what is running to end (it never raises)."""
        await self.compactor.wait()
        await self.indexes.stop()
