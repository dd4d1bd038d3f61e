"""Fencing a table: a writer taking it over records its token in the table itself.

The fence is an ``UpdateConfig`` commit setting the table metadata ``lancequeue.fence`` (and
copying the newest watermark there, in case the transactions carrying it are cleaned up), then
a ``Merge`` of the unchanged fragments and schema. Lance refuses an ``Append`` based on a
version older than a ``Merge``, and a ``Merge`` based on a version older than an ``Append``
(so a fence always sees every append before it), and refuses a ``Rewrite`` (compaction)
planned before it: a writer paused before the takeover can commit nothing after it, and one
that reads the table after it sees the newer token and stops.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import lance
from lance import LanceOperation, Transaction
from lance.commit import CommitConflictError

from lancequeue.common.errors import WriterReplaced
from lancequeue.writer.watermark import EPOCH, FENCE, LAST_ID, SKIPPED, Watermark

logger = logging.getLogger(__name__)

_CONFLICT_RETRIES = 20
_WATERMARK_SCAN_VERSIONS = 1000
"""How far back through the table's versions to look for the latest watermark; the fence
commit of every takeover carries it forward, so the scan stops there at the latest."""


def fence(
    latest: Callable[[], lance.LanceDataset],
    token: int,
    consumer: str,
    name: str,
    storage_options: Mapping[str, str] | None,
) -> tuple[lance.LanceDataset, Watermark | None]:
    """Record ``token`` in the table (``latest()`` gives its newest version, read again after a
    conflict); return the fenced table and the newest watermark it held, carried into the
    fence. Raises ``WriterReplaced`` if the table holds a newer token already."""
    options = dict(storage_options) if storage_options else None
    for _ in range(_CONFLICT_RETRIES):
        dataset = latest()
        check_fence(dataset, token, name)
        watermark = find_watermark(dataset)
        updates: dict[str, str | None] = {FENCE: str(token)}
        properties = {FENCE: str(token)}
        if watermark is not None:
            carried = watermark.properties(token, consumer)
            updates.update({key: carried[key] for key in (EPOCH, LAST_ID, SKIPPED)})
            properties.update(carried)
        try:
            dataset = lance.LanceDataset.commit(
                dataset,
                Transaction(
                    read_version=dataset.version,
                    operation=LanceOperation.UpdateConfig(
                        table_metadata_updates=LanceOperation.UpdateMap(updates, replace=False)
                    ),
                    transaction_properties=properties,
                ),
                max_retries=0,
                storage_options=options,
            )
            dataset = lance.LanceDataset.commit(
                dataset,
                Transaction(
                    read_version=dataset.version,
                    operation=LanceOperation.Merge(
                        [fragment.metadata for fragment in dataset.get_fragments()],
                        dataset.lance_schema,
                    ),
                    transaction_properties=properties,
                ),
                max_retries=0,
                storage_options=options,
            )
        except CommitConflictError as exc:
            logger.info("fencing %r raced another commit (%s); again", name, exc)
            continue
        logger.info(
            "table %r fenced with token %d at version %d; watermark %s",
            name,
            token,
            dataset.version,
            watermark.last_id if watermark else "none",
        )
        return dataset, watermark
    raise OSError(f"could not fence table {name!r}: {_CONFLICT_RETRIES} conflicts")


def check_fence(dataset: lance.LanceDataset, token: int, name: str) -> None:
    """Raise ``WriterReplaced`` if ``dataset`` holds a token newer than ``token``."""
    newest = fence_of(dataset)
    if newest > token:
        raise WriterReplaced(
            f"table {name!r} was fenced by a newer writer (token {newest}; this writer's is "
            f"{token})"
        )


def fence_of(dataset: lance.LanceDataset) -> int:
    """The newest fencing token recorded in the table (0 if none)."""
    value = dataset.metadata.get(FENCE, "0")
    return int(value) if value.isdigit() else 0


def find_watermark(dataset: lance.LanceDataset) -> Watermark | None:
    """The newest watermark: from the newest commit carrying one, else the table metadata (where
    each fence copies it, in case the older transactions were cleaned up)."""
    oldest = max(1, dataset.version - _WATERMARK_SCAN_VERSIONS)
    for version in range(dataset.version, oldest - 1, -1):
        try:
            transaction = dataset.read_transaction(version)
        except OSError:  # cleaned up
            break
        if transaction is None:
            continue
        if FENCE in (transaction.transaction_properties or {}) and LAST_ID not in (
            transaction.transaction_properties or {}
        ):
            # A fence with no watermark: nothing was committed through lancequeue before it.
            return None
        watermark = Watermark.from_properties(transaction.transaction_properties)
        if watermark is not None:
            return watermark
    return Watermark.from_properties(dict(dataset.metadata))


def commit_fenced(
    dataset: lance.LanceDataset,
    transaction: Callable[[lance.LanceDataset], Transaction],
    table: tuple[Callable[[], lance.LanceDataset], Callable[[lance.LanceDataset], None]],
    storage_options: Mapping[str, str] | None,
    what: str,
) -> lance.LanceDataset:
    """Commit the transaction ``transaction`` makes on ``dataset`` (the newest version this
    writer knows). A fence committed since conflicts with it (an ``Append`` or an ``Update``
    against a ``Merge``), so a replaced writer never commits here: on any conflict the newest
    version's fence is checked (``table``: how to open the newest version, and the check, which
    raises ``WriterReplaced``) and, unfenced, the transaction is made again on it."""
    latest, check = table
    for _ in range(_CONFLICT_RETRIES):
        made = transaction(dataset)
        try:
            return lance.LanceDataset.commit(
                dataset,
                made,
                max_retries=0,
                storage_options=dict(storage_options) if storage_options else None,
            )
        except CommitConflictError:
            dataset = latest()
            check(dataset)
    raise OSError(f"{what}: {_CONFLICT_RETRIES} commit conflicts")
