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
of it (two merges computed on one version would both insert a new key). ``keyed_commits.py``
makes the commits; ``settle`` tells it which records each change settles, and, after the table
refused a change, what its key falls back to.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import lance
import pyarrow as pa
from lance import Transaction

from lancequeue.common.errors import ConfigError
from lancequeue.writer.entries import Entry
from lancequeue.writer.fencing import commit_fenced

Key = tuple[Any, ...]


@dataclass(frozen=True)
class TableKey:
    """The key columns of a table, and whether its records are upserts by them."""

    columns: tuple[str, ...]
    upsert: bool

    def __post_init__(self) -> None:
        for name in self.columns:
            if '"' in name or "`" in name:
                raise ConfigError(
                    f"{self.flag} {name!r}: Lance cannot join on a column whose name holds a "
                    "double quote or a backtick (its merge-insert finds no such column)"
                )

    @property
    def flag(self) -> str:
        """The writer option that names these key columns."""
        return "--upsert-key" if self.upsert else "--delete-key"

    def check(self, schema: pa.Schema, table: str) -> None:
        """Raise ``ConfigError`` unless every key column is a column of integers or strings of
        ``schema`` (what a delete's filter can name exactly)."""
        flag = self.flag
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

    def unfit(self, key: dict[str, Any]) -> str | None:
        """Why a delete's key cannot be one of this table's whatever its schema, if it cannot:
        ``misnamed``, or a value that is neither an integer nor a string."""
        why = self.misnamed(key)
        if why is not None:
            return why
        for name in self.columns:
            value = key[name]
            if isinstance(value, bool) or not isinstance(value, (int, str)):
                return (
                    f"a key column holds integers or strings; {name!r} is "
                    f"{type(value).__name__} {value!r:.60}"
                )
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


@dataclass(frozen=True)
class Op:
    """One of a batch's operations on its table, in stream order: a row to write, or a delete
    of ``key``."""

    key: Key | None
    """None: a row without a value in a key column (an append table writes it; no delete
    names it)."""
    delete: bool = False


@dataclass
class KeyedChanges:
    """A batch's changes by key, one per key: which operations (by index) write a row, which
    keys go, and which operations each change settles."""

    rows: list[int]
    """Operations whose rows are written, in stream order."""
    deletes: list[Key]
    """Keys whose rows go (from the table as the commit before left it)."""
    with_deletes: list[int]
    """Operations settled once the deletes are committed: the deletes, and the operations on
    their keys they undo or supersede."""
    superseded: dict[int, list[int]]
    """A written row's operation → the earlier operations on its key it supersedes (settled
    once it is written; an upsert table's)."""


def settle(key: TableKey, ops: Sequence[Op], excluded: Collection[int] = ()) -> KeyedChanges:
    """The changes a batch's operations ``ops`` make, leaving out those ``excluded`` (settled
    already, or refused), the last operation on each key winning (see the module's
    docstring)."""
    by_key: dict[Key, list[int]] = {}
    changes = KeyedChanges([], [], [], {})
    for index, op in enumerate(ops):
        if index in excluded:
            continue
        if op.key is None:
            changes.rows.append(index)
        else:
            by_key.setdefault(op.key, []).append(index)
    for op_key, indices in by_key.items():
        last_delete = max((index for index in indices if ops[index].delete), default=None)
        if key.upsert and not ops[indices[-1]].delete:
            changes.rows.append(indices[-1])
            changes.superseded[indices[-1]] = indices[:-1]
            continue
        if last_delete is not None:
            changes.deletes.append(op_key)
        for index in indices:
            if last_delete is not None and index <= last_delete:
                changes.with_deletes.append(index)
            else:  # an append table's rows after the key's last delete
                changes.rows.append(index)
    changes.rows.sort()
    changes.with_deletes.sort()
    return changes


@dataclass
class KeyedOps:
    """A batch's operations on a table with key columns, from its claim to its commit."""

    key: TableKey
    entries: list[Entry]
    """The record of each operation, in stream order."""
    ops: list[Op]
    rows: pa.Table | None
    """The rows of the operations that write one (``row_of``)."""
    row_of: dict[int, int]
    """Operation → its row in ``rows``."""
    changes: KeyedChanges
    """The changes the operations make (the first round)."""

    def table(self, indices: Sequence[int]) -> pa.Table:
        """The rows of the operations ``indices``, in their order."""
        assert self.rows is not None
        return self.rows.take([self.row_of[index] for index in indices])


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
