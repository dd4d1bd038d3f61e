"""Writes by key, without Redis: a batch settled to one change per key, and the delete filter
Lance runs, tried on a real Lance dataset."""

from __future__ import annotations

from pathlib import Path

import lance
import pyarrow as pa
import pytest

from lancequeue.common.errors import ConfigError
from lancequeue.writer.keyed import KeyedChanges, Op, TableKey, merge_uncommitted, settle

UPSERT = TableKey(("id",), upsert=True)
APPEND = TableKey(("id",), upsert=False)


def ops(*spec: str) -> list[Op]:
    """Operations from ``"a"`` (a row of key a) and ``"-a"`` (a delete of a), in stream order."""
    return [Op((name.lstrip("-"),), delete=name.startswith("-")) for name in spec]


def test_an_upsert_batch_keeps_the_last_operation_of_each_key() -> None:
    changes = settle(UPSERT, ops("a", "b", "-b", "a", "-c", "c", "-d"))
    assert changes.rows == [3, 5]  # a's second row; c written again after its delete
    assert changes.deletes == [("b",), ("d",)]
    assert changes.with_deletes == [1, 2, 6]  # b's row and delete, d's delete
    assert changes.superseded == {3: [0], 5: [4]}  # settled once the row that wins is written


def test_a_refused_operation_gives_way_to_the_one_before_it_on_its_key() -> None:
    batch = ops("a", "-a", "a", "b")
    assert settle(UPSERT, batch, excluded={2}).deletes == [("a",)]  # the delete wins then
    assert settle(UPSERT, batch, excluded={1, 2}).rows == [0, 3]  # then the first row
    assert settle(UPSERT, batch, excluded={0, 1, 2, 3}) == KeyedChanges([], [], [], {})


def test_an_append_batch_deletes_the_earlier_rows_of_a_key_and_keeps_later_ones() -> None:
    batch = [*ops("a", "a", "b", "-a", "a", "-c"), Op(None)]  # the last row has no key
    changes = settle(APPEND, batch)
    assert changes.rows == [2, 4, 6]  # b, the a appended after the delete, the keyless row
    assert changes.deletes == [("a",), ("c",)]  # from the table as it was before the batch
    assert changes.with_deletes == [0, 1, 3, 5]  # the deletes and the rows they undo


def test_a_key_column_name_lance_cannot_join_on_is_refused() -> None:
    for name in ('user"id', "user`id"):
        with pytest.raises(ConfigError, match="double quote or a backtick"):
            TableKey((name,), upsert=True)


@pytest.mark.parametrize(
    ("columns", "keys", "kept"),
    [
        (("id",), [(1,), (-(2**63),)], [2, 3]),  # any int64, its least too
        (("name",), [("o'brien",), ("x') OR ('1' = '1",)], [2, 3]),  # values, never SQL
        (("id", "name"), [(1, "o'brien"), (2, "nobody")], [2, 3]),
    ],
)
def test_a_delete_removes_exactly_the_rows_of_its_keys(
    tmp_path: Path, columns: tuple[str, ...], keys: list[tuple[object, ...]], kept: list[int]
) -> None:
    data = pa.table({"id": [1, 2, 3], "name": ["o'brien", "b", "c"]})
    dataset = lance.write_dataset(data, tmp_path / "t.lance")
    transaction, stats = merge_uncommitted(dataset, TableKey(columns, upsert=True), None, keys)
    dataset = lance.LanceDataset.commit(dataset, transaction)
    assert sorted(dataset.to_table().column("id").to_pylist()) == kept
    assert stats["num_deleted_rows"] == 1


def test_a_key_column_holds_integers_or_strings() -> None:
    schema = pa.schema([pa.field("id", pa.float64()), pa.field("name", pa.string())])
    with pytest.raises(Exception, match="holds integers or strings"):
        UPSERT.check(schema, "docs")
    TableKey(("name",), upsert=True).check(schema, "docs")
