"""Bad vectors (NaN values, wrong length, null) are treated as LanceDB's ``table.add()`` treats
them under the writer's ``on_bad_vectors``: refused (``error``, the default), dropped, filled or
nulled; and a dropped record is still answered."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from lancequeue.common.errors import ConfigError, RecordRejected
from lancequeue.producer import Producer
from lancequeue.writer.settings import WriterSettings
from tests.lancedb_reference import add_one_by_one, reference_table, rows
from tests.support import WRITTEN, StartWriter, WriterProcess, gather, table_ids

NAN = float("nan")
SCHEMA = pa.schema([pa.field("id", pa.int64()), pa.field("vector", pa.list_(pa.float32(), 4))])
RECORDS: list[dict[str, Any]] = [
    {"id": 1, "vector": [1.0, 2.0, 3.0, 4.0]},
    {"id": 2, "vector": [1.0, NAN, 3.0, 4.0]},
    {"id": 3, "vector": np.array([NAN, 1, 1, 1], dtype=np.float32)},
    {"id": 4, "vector": [1.0, 2.0]},  # too short
    {"id": 5, "vector": None},  # null: not a bad vector
    {"id": 6},  # no vector at all: never a bad one
]


async def test_a_nan_vector_is_rejected_naming_its_field_and_its_batch_mates_land(
    start_writer: StartWriter, producer: Producer, db_uri: str
) -> None:
    start_writer(schema=SCHEMA, coalesce_ms=60_000, max_batch=len(RECORDS))
    results = await gather(producer.enqueue_many(RECORDS))
    for index in (1, 2):
        assert isinstance(results[index], RecordRejected), results[index]
        assert "field 'vector'" in str(results[index]) and "NaN" in str(results[index])
    assert isinstance(results[3], RecordRejected)
    assert "field 'vector': expected a vector of 4 floats, got 2" in str(results[3])
    assert [results[i] for i in (0, 4, 5)] == [WRITTEN] * 3
    reference = reference_table(db_uri, "reference", SCHEMA)
    assert add_one_by_one(reference, RECORDS) == [r == WRITTEN for r in results]
    assert rows(db_uri, "docs") == rows(db_uri, "reference")


@pytest.mark.parametrize("mode", ["drop", "fill", "null"])
async def test_on_bad_vectors_drops_fills_or_nulls_bad_vectors_as_lancedb_s_add_does(
    start_writer: StartWriter, producer: Producer, db_uri: str, mode: str
) -> None:
    start_writer(
        schema=SCHEMA,
        coalesce_ms=60_000,
        max_batch=len(RECORDS),
        on_bad_vectors=mode,
        fill_value=0.5,
    )
    results = await gather(producer.enqueue_many(RECORDS))
    reference = reference_table(db_uri, "reference", SCHEMA)
    landed = add_one_by_one(reference, RECORDS, on_bad_vectors=mode, fill_value=0.5)
    assert [r == WRITTEN for r in results] == landed
    assert rows(db_uri, "docs") == rows(db_uri, "reference")
    if mode == "drop":  # not in the table, so answered all the same
        assert landed == [True, False, False, False, True, True]
        for index in (1, 2, 3):
            assert isinstance(results[index], RecordRejected), results[index]
            assert "field 'vector'" in str(results[index])
            assert "dropped (on_bad_vectors=drop)" in str(results[index])
    else:
        assert results == [WRITTEN] * len(RECORDS)
    if mode == "fill":
        vectors = {row["id"]: row["vector"] for row in rows(db_uri, "docs")}
        assert vectors[2] == [1.0, 0.5, 3.0, 4.0]
        assert vectors[4] == [1.0, 2.0, 0.5, 0.5]
        assert vectors[5] is None and vectors[6] is None


def test_the_writer_cli_takes_on_bad_vectors_and_fill_value(
    writer_process: Any, producer: Producer, db_uri: str
) -> None:
    process: WriterProcess = writer_process(
        "--schema",
        "tests.integration.test_bad_vectors:SCHEMA",
        "--on-bad-vectors",
        "fill",
        "--fill-value",
        "0.25",
    )
    producer.write({"id": 1, "vector": [NAN, 1.0, 1.0, 1.0]}, 30)
    assert rows(db_uri, "docs") == [{"id": 1, "vector": [0.25, 1.0, 1.0, 1.0]}]
    assert table_ids(db_uri) == [1]
    process.close()


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"on_bad_vectors": "ignore"}, "on_bad_vectors must be one of error, drop, fill, null"),
        ({"fill_value": NAN}, "fill_value must be a finite number"),
        ({"fill_value": "zero"}, "fill_value must be a finite number"),
    ],
)
def test_a_bad_on_bad_vectors_setting_is_a_config_error(
    settings: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        WriterSettings(table="docs", **settings)
