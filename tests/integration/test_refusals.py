"""Refusals of the data: a record Lance would refuse is rejected alone, never retried as if the
storage had failed; and when Lance refuses a batch the checks let through, the batch is bisected
at once."""

from __future__ import annotations

from pathlib import Path

import lance
import pyarrow as pa
import pytest
from lance.commit import CommitConflictError

from lancequeue.common.errors import RecordRejected
from lancequeue.producer import Producer
from lancequeue.writer.entries import Entry
from lancequeue.writer.flush import BatchSettler
from lancequeue.writer.refusals import RetryPolicy, is_data_error
from lancequeue.writer.settlement import PreparedBatch, Settlement
from lancequeue.writer.table import TableSink
from tests.support import KEYS, WRITTEN, FixedToken, StartWriter, broken_storage, gather, table_ids

META = pa.struct([pa.field("a", pa.int64(), nullable=False), pa.field("b", pa.string())])
SCHEMA = pa.schema([pa.field("id", pa.int64(), nullable=False), pa.field("meta", META)])


async def test_a_record_missing_a_required_field_inside_a_struct_is_rejected_alone(
    start_writer: StartWriter, producer: Producer, db_uri: str
) -> None:
    start_writer(schema=SCHEMA, coalesce_ms=60_000, max_batch=6, flush_retries=1)
    records = [
        {"id": 1, "meta": {"a": 1}},
        {"id": 2, "meta": {}},
        {"id": 3, "meta": {"a": None, "b": "x"}},
        {"id": 4, "meta": {"a": 4, "b": "four"}},
        {"id": 5, "meta": None},  # a null struct has no children to require
        {"id": 6},
    ]
    results = await gather(producer.enqueue_many(records))
    assert [results[i] for i in (0, 3, 4, 5)] == [WRITTEN] * 4
    assert isinstance(results[1], RecordRejected)
    assert "field 'meta': missing required field 'a'" in str(results[1])
    assert isinstance(results[2], RecordRejected)
    assert "field 'meta': field 'a' is required and may not be null" in str(results[2])
    assert table_ids(db_uri) == [1, 4, 5, 6]


async def test_a_required_field_inside_a_list_of_structs_is_checked_too(
    start_writer: StartWriter, producer: Producer, db_uri: str
) -> None:
    items = pa.list_(pa.field("item", META, nullable=False))
    start_writer(schema=pa.schema([pa.field("id", pa.int64()), pa.field("metas", items)]))
    bad = [{"id": 1, "metas": [{"a": 1}, {"b": "no a"}]}, {"id": 2, "metas": [None]}]
    results = await gather(
        [*producer.enqueue_many(bad), producer.enqueue({"id": 3, "metas": [{"a": 3}]})]
    )
    assert isinstance(results[0], RecordRejected)
    assert "field 'metas': item 1: missing required field 'a'" in str(results[0])
    assert isinstance(results[1], RecordRejected)
    assert "field 'metas': item 0 is required and may not be null" in str(results[1])
    assert results[2] == WRITTEN
    assert table_ids(db_uri) == [3]


def _lance_refusal(tmp_path: Path) -> OSError:
    """What Lance raises writing a struct whose non-nullable child holds a null."""
    dataset = lance.write_dataset(SCHEMA.empty_table(), str(tmp_path / "refuses.lance"))
    rows = pa.table({"id": [1], "meta": pa.array([{"b": "no a"}], type=META)}, schema=SCHEMA)
    with pytest.raises(OSError) as raised:
        lance.fragment.write_fragments(rows, dataset)
    return raised.value


def test_lance_refusing_the_data_is_a_data_error_and_failing_storage_is_not(
    tmp_path: Path,
) -> None:
    refusal = _lance_refusal(tmp_path)
    assert "Invalid user input" in str(refusal)
    assert is_data_error(refusal)
    assert is_data_error(pa.ArrowInvalid("a value Arrow cannot convert"))
    db = tmp_path / "db"
    dataset = lance.write_dataset(pa.table({"id": [1]}), str(db / "docs.lance"))
    with broken_storage(str(db)), pytest.raises(OSError) as raised:
        lance.fragment.write_fragments(pa.table({"id": [2]}), dataset)
    assert "LanceError(IO)" in str(raised.value)
    assert not is_data_error(raised.value)
    assert not is_data_error(CommitConflictError("Commit conflict for version 3: ..."))
    assert not is_data_error(OSError("Operation timed out: object store, location: x"))


async def test_a_batch_lance_refuses_is_bisected_at_once_and_never_retried(
    redis_url: str, db_uri: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The settler against a real table and a batch the writer's checks never built: Lance's own
    refusal of one row rejects that row alone, without a single retry."""
    sink, _ = await TableSink.open(db_uri, "docs", SCHEMA, 64 * 1024 * 1024, FixedToken(), "w")
    settler = BatchSettler(sink, RetryPolicy(retries=4, backoff_ms=10))
    metas = [{"a": i} for i in range(6)]
    metas[4] = {"b": "no a"}
    rows = pa.table({"id": list(range(6)), "meta": pa.array(metas, type=META)}, schema=SCHEMA)
    entries = [
        Entry(f"{i + 1}-0".encode(), KEYS.reply("p"), i, {"id": i, "meta": metas[i]})
        for i in range(6)
    ]
    prepared = PreparedBatch(entries, "epoch", Settlement(), 1, rows=entries, table=rows)

    settled = await settler.commit(await settler.write(prepared))
    answers = [settled.answers[entry.record_id] for entry in entries]
    assert answers[:4] + answers[5:] == [None] * 5
    refused = answers[4]
    assert refused is not None and refused["error"] == "RecordRejected"
    assert "the table refused it" in refused["message"]
    assert "contained null values" in refused["message"]
    assert settled.commits == 1
    assert "retry" not in caplog.text
    assert table_ids(db_uri) == [0, 1, 2, 3, 5]
