"""Writes by key: a table's key columns, and a batch's upserts and deletes settled to one change
per key.

With ``--upsert-key`` every record of the table is an upsert: a batch's rows become one Lance
merge-insert (matched rows updated, the others inserted) committed with the batch's watermark.
With ``--delete-key`` records stay appends. Either way a delete entry removes the rows of its
key. Within a batch the operation sent last for a key wins (stream order), so a batch needs one
change per key:

* upsert table: the last upsert of each key is written unless a delete of it came after; the
  keys whose last operation is a delete are deleted;
* append table: a delete removes the rows of its key the table held before the batch and the
  batch's own appends of that key before it; appends after it stay.

The keys to delete and the rows to write are then apart, so a batch with deletes is two commits:
the deletes (a merge-insert joining a table of the keys), then the rows, which carry the
watermark. A crash between them replays the batch: deleting again deletes nothing more, and the
rows are written once. Every merge is computed on the table the commit before left, never ahead
of it (two merges computed on one version would both insert a new key).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import lance
import pyarrow as pa
from lance import Transaction

from lancequeue.common.errors import ConfigError
from lancequeue.writer.fencing import commit_fenced

Key = tuple[Any, ...]


@dataclass(frozen=True)
class TableKey:
    """The key columns of a table, and whether its records are upserts by them."""

    columns: tuple[str, ...]
    upsert: bool

    def check(self, schema: pa.Schema, table: str) -> None:
        """Raise ``ConfigError`` unless every key column is a column of integers or strings of
        ``schema`` (what a delete's filter can name exactly)."""
        flag = "--upsert-key" if self.upsert else "--delete-key"
        for name in self.columns:
            index = schema.get_field_index(name)
            if index < 0:
                raise ConfigError(
                    f"{flag} {name!r}: table {table!r} has no such column (its columns: "
                    f"{', '.join(schema.names)})"
                )
            data_type = schema.field(index).type
            if not (
                pa.types.is_integer(data_type)
                or pa.types.is_string(data_type)
                or pa.types.is_large_string(data_type)
            ):
                raise ConfigError(
                    f"{flag} {name!r}: a key column holds integers or strings; table "
                    f"{table!r} has it as {data_type}"
                )

    def key_schema(self, schema: pa.Schema) -> pa.Schema:
        """The schema of a delete's key: the key columns, each required."""
        return pa.schema([schema.field(name).with_nullable(False) for name in self.columns])

    def misnamed(self, key: dict[str, Any]) -> str | None:
        """Why a delete's key is not one of this table's, if it is not: it names exactly the key
        columns."""
        names = ", ".join(self.columns)
        missing = [name for name in self.columns if key.get(name) is None]
        if missing:
            return f"a delete names every key column ({names}); {missing[0]!r} has no value"
        extra = [name for name in key if name not in self.columns]
        if extra:
            return f"a delete names the key columns ({names}) only, not {extra[0]!r}"
        return None

    def keys(self, table: pa.Table) -> list[Key]:
        """Each row's key, in row order."""
        columns = [table.column(name).to_pylist() for name in self.columns]
        return list(zip(*columns, strict=True))

    def null_rows(self, table: pa.Table) -> dict[int, str]:
        """The rows holding no value in a key column, with why they cannot be written."""
        missing: dict[int, str] = {}
        for name in self.columns:
            column = table.column(name)
            if column.null_count:
                for index, value in enumerate(column.to_pylist()):
                    if value is None:
                        missing.setdefault(index, f"key column {name!r} has no value")
        return missing


@dataclass
class KeyedChanges:
    """A batch's changes by key, one per key: which of its rows to write, and which keys to
    delete from the table as it was before the batch."""

    rows: list[int]
    """Positions (in the batch's rows) of the rows to write, in order."""
    deletes: list[Key]
    """Keys whose rows go, in the order of their first delete in the batch."""


def settle(
    key: TableKey, row_keys: list[Key], row_order: list[int], deletes: list[tuple[int, Key]]
) -> KeyedChanges:
    """The changes a batch makes: its rows (with their keys ``row_keys`` and stream positions
    ``row_order``) and its deletes (stream position, key), the last operation on each key
    winning (see the module's docstring)."""
    operations = sorted(
        [
            (order, False, index, row_key)
            for index, (order, row_key) in enumerate(zip(row_order, row_keys, strict=True))
        ]
        + [(order, True, -1, deleted) for order, deleted in deletes]
    )
    if key.upsert:
        last: dict[Key, tuple[bool, int]] = {}
        for _, is_delete, index, op_key in operations:
            last[op_key] = (is_delete, index)
        rows = sorted(index for is_delete, index in last.values() if not is_delete)
        gone = [op_key for op_key, (is_delete, _) in last.items() if is_delete]
        return KeyedChanges(rows, gone)
    deleted_after: set[Key] = set()
    kept: list[int] = []
    for _, is_delete, index, op_key in reversed(operations):
        if is_delete:
            deleted_after.add(op_key)
        elif op_key not in deleted_after:
            kept.append(index)
    first_deletes = dict.fromkeys(deleted for _, deleted in deletes)
    return KeyedChanges(sorted(kept), list(first_deletes))


def settle_batch(
    key: TableKey,
    rows: pa.Table | None,
    row_order: list[int],
    delete_keys: pa.Table | None,
    delete_order: list[int],
) -> tuple[pa.Table | None, list[int], list[Key], dict[int, str]]:
    """A batch's changes: of its ``rows`` (at stream positions ``row_order``) those to write,
    and their positions among the rows; the keys to delete (``delete_keys`` at positions
    ``delete_order``); and the rows refused for holding no key, with why."""
    # an upsert needs its key; an append without one is written, as no delete names it
    refused = key.null_rows(rows) if rows is not None and key.upsert else {}
    candidates = [index for index in range(len(row_order)) if index not in refused]
    row_keys = key.keys(rows.take(candidates)) if rows is not None and candidates else []
    deleted = key.keys(delete_keys) if delete_keys is not None else []
    changes = settle(
        key,
        row_keys,
        [row_order[index] for index in candidates],
        list(zip(delete_order, deleted, strict=True)),
    )
    kept = [candidates[index] for index in changes.rows]
    table = rows.take(kept) if rows is not None and kept else None
    return table, kept, changes.deletes, refused


def merge_uncommitted(
    dataset: lance.LanceDataset,
    key: TableKey,
    rows: pa.Table | None,
    deletes: list[Key],
) -> tuple[Any, dict[str, int]]:
    """The uncommitted Lance transaction (its data files written) against ``dataset`` that
    upserts ``rows`` (an upsert table's), or else deletes the rows of ``deletes``, and Lance's
    counts of rows inserted, updated and deleted. Deletes go by a join on a table of the keys
    (no filter text: any key value, and no scan of the whole table), and never with upserts: a
    batch's keys to delete and rows to write are apart (``settle``), so the two commits may
    follow each other, the deletes first."""
    columns = list(key.columns)
    builder = dataset.merge_insert(columns if len(columns) > 1 else columns[0])
    if rows is not None:
        builder = builder.when_matched_update_all().when_not_matched_insert_all()
        source = rows
    else:
        builder = builder.when_matched_delete()
        source = pa.Table.from_pylist(
            [dict(zip(key.columns, deleted, strict=True)) for deleted in deletes],
            schema=key.key_schema(dataset.schema),
        )
    transaction, stats = builder.execute_uncommitted(source)
    return transaction, stats


Changes = tuple[pa.Table | None, list[Key], dict[str, str]]
"""The rows to upsert (an upsert table's), the keys to delete, the commit's properties (the
watermark's, if it carries one)."""


def commit_changes(
    dataset: lance.LanceDataset,
    table: tuple[Callable[[], lance.LanceDataset], Callable[[lance.LanceDataset], None]],
    storage_options: Mapping[str, str] | None,
    key: TableKey,
    changes: Changes,
) -> tuple[lance.LanceDataset, dict[str, int]]:
    """Merge and commit a batch's changes on ``dataset``, the newest version of the table this
    writer knows (``fencing.commit_fenced``; ``table``: how to open the newest version and check
    its fence). A commit that conflicts (a compaction rewrote the rows meanwhile) is merged
    again on the newest version, never committed as it was planned."""
    rows, deletes, properties = changes
    stats: dict[str, int] = {}

    def merged(base: lance.LanceDataset) -> Transaction:
        transaction, counts = merge_uncommitted(base, key, rows, deletes)
        stats.clear()
        stats.update(counts)
        made: Transaction = transaction
        if properties:
            made = dataclasses.replace(made, transaction_properties=properties)
        return made

    committed = commit_fenced(dataset, merged, table, storage_options, f"merge into {dataset.uri}")
    return committed, stats
