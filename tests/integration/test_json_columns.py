"""JSON columns take dicts and lists, written as their JSON text, and JSON strings, as LanceDB's
``table.add()`` does; what is not JSON is rejected alone, naming the field."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pyarrow as pa

from lancequeue.common.errors import RecordRejected
from lancequeue.producer import Producer
from tests.lancedb_reference import add_one_by_one, reference_table, rows
from tests.support import WRITTEN, StartWriter, gather

SCHEMA = pa.schema(
    [
        pa.field("id", pa.int64()),
        pa.field("doc", pa.json_()),
        pa.field("meta", pa.struct([pa.field("extra", pa.json_()), pa.field("n", pa.int64())])),
        pa.field("docs", pa.list_(pa.json_())),
    ]
)
RECORDS: list[dict[str, Any]] = [
    {"id": 1, "doc": {"a": 1, "b": [True, None, "x"]}},
    {"id": 2, "doc": [1, 2.5, "three"]},
    {"id": 3, "doc": '{"already": "text"}'},
    {"id": 4, "meta": {"extra": {"nested": 1}, "n": 4}, "docs": [{"k": 1}, "[]", None]},
    {"id": 5, "doc": "not json"},
    {"id": 6, "doc": {"when": datetime(2026, 1, 1)}},  # JSON has no datetime
    {"id": 7, "doc": 5},
    {"id": 8},
]


async def test_dicts_and_lists_for_json_columns_are_written_as_lancedb_s_add_writes_them(
    start_writer: StartWriter, producer: Producer, db_uri: str
) -> None:
    reference_table(db_uri, "docs", SCHEMA)  # made by LanceDB: the writer opens it
    start_writer(coalesce_ms=60_000, max_batch=len(RECORDS))
    results = await gather(producer.enqueue_many(RECORDS))
    assert results[:4] + results[7:] == [WRITTEN] * 5
    assert isinstance(results[4], RecordRejected)
    assert "field 'doc': not valid JSON" in str(results[4])
    assert isinstance(results[5], RecordRejected)
    assert "field 'doc': cannot be written as JSON" in str(results[5])
    assert isinstance(results[6], RecordRejected) and "field 'doc'" in str(results[6])
    reference = reference_table(db_uri, "reference", SCHEMA)
    assert add_one_by_one(reference, RECORDS) == [r == WRITTEN for r in results]
    assert rows(db_uri, "docs") == rows(db_uri, "reference")
    assert rows(db_uri, "docs")[0]["doc"] == '{"a":1,"b":[true,null,"x"]}'
