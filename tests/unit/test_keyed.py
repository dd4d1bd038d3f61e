"""Writes by key, without Redis: a batch settled to one change per key, and the delete filter
Lance runs, tried on a real Lance dataset."""

from __future__ import annotations

from pathlib import Path

import lance
import pyarrow as pa
import pytest

from lancequeue.writer.keyed import TableKey, merge_uncommitted, settle

UPSERT = TableKey(("id",), upsert=True)
APPEND = TableKey(("id",), upsert=False)


def test_an_upsert_batch_keeps_the_last_operation_of_each_key() -> None:
    # rows at stream positions 0, 1, 3, 5 (keys a, b, a, c); deletes at 2 (b), 4 (c), 6 (d)
    changes = settle(
        UPSERT,
        [("a",), ("b",), ("a",), ("c",)],
        [0, 1, 3, 5],
        [(2, ("b",)), (4, ("c",)), (6, ("d",))],
    )
    assert changes.rows == [2, 3]  # a's second row; c written again after its delete
    assert changes.deletes == [("b",), ("d",)]


def test_an_append_batch_deletes_the_earlier_rows_of_a_key_and_keeps_later_ones() -> None:
    changes = settle(
        APPEND,
        [("a",), ("a",), ("b",), ("a",)],
        [0, 1, 2, 4],
        [(3, ("a",)), (5, ("c",))],
    )
    assert changes.rows == [2, 3]  # b, and the a appended after the delete
    assert changes.deletes == [("a",), ("c",)]  # from the table as it was before the batch


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
