"""A table's embedding functions compute the vectors records come without, as LanceDB's
``table.add()`` does, but in one call per batch and vector column; ``lancequeue writer
--import MODULE`` loads a module registering custom ones."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

from lancequeue.common.errors import RecordRejected, WriteFailed
from lancequeue.producer import Producer
from tests.fake_embeddings import (
    CALLS,
    DIM,
    FAILING_TEXT,
    EmbeddedDoc,
    TwoVectorDoc,
    embed,
)
from tests.lancedb_reference import add_one_by_one, reference_table, rows
from tests.support import TESTS_DIR, WRITTEN, StartWriter, WriterProcess, cli_env, gather, run_cli

REPO = TESTS_DIR.parent
CONSOLE_SCRIPT = Path(sys.executable).parent / "lancequeue"
"""The installed ``lancequeue`` command: unlike ``python -c``, it does not put the current
directory on the module path by itself."""


async def test_a_record_without_its_vector_gets_the_one_the_table_s_embedding_function_computes(
    start_writer: StartWriter, producer: Producer, db_uri: str
) -> None:
    start_writer(schema=EmbeddedDoc, coalesce_ms=60_000, max_batch=3)
    records: list[dict[str, Any]] = [
        {"id": 1, "text": "hello"},
        {"id": 2, "text": "its own vector", "vector": [1.0, 2.0, 3.0, 4.0]},
        {"id": 3, "text": "null vector", "vector": None},
    ]
    assert await gather(producer.enqueue_many(records)) == [WRITTEN] * 3
    written = rows(db_uri, "docs")
    assert written[0]["vector"] == embed("hello")
    assert written[1]["vector"] == [1.0, 2.0, 3.0, 4.0]
    # add() computes a null vector too, in the code; lancedb 0.40 fails on a one-record list
    # holding one ("Invalid null value"), so the reference gets the first two only.
    assert written[2]["vector"] == embed("null vector")
    reference = reference_table(db_uri, "reference", EmbeddedDoc)
    assert add_one_by_one(reference, records[:2]) == [True, True]
    assert written[:2] == rows(db_uri, "reference")


async def test_embeddings_are_computed_in_one_call_per_batch_and_vector_column(
    start_writer: StartWriter, producer: Producer, db_uri: str
) -> None:
    start_writer(schema=TwoVectorDoc, coalesce_ms=60_000, max_batch=6)
    records: list[dict[str, Any]] = [
        {"id": i, "text": f"text {i}", "title": f"title {i}"} for i in range(6)
    ]
    records[2]["vector"] = [0.0] * DIM  # has its own: not computed
    CALLS.clear()
    assert await gather(producer.enqueue_many(records)) == [WRITTEN] * 6
    assert sorted(CALLS) == [
        [f"text {i}" for i in (0, 1, 3, 4, 5)],
        [f"title {i}" for i in range(6)],
    ]
    for row in rows(db_uri, "docs"):
        own = row["id"] == 2
        assert row["vector"] == ([0.0] * DIM if own else embed(row["text"]))
        assert row["title_vector"] == embed(row["title"], salt="title:")


@pytest.mark.parametrize("mode", ["error", "null"])
async def test_a_record_its_function_gives_no_vector_is_treated_as_lancedb_s_add_treats_it(
    start_writer: StartWriter, producer: Producer, db_uri: str, mode: str
) -> None:
    start_writer(schema=EmbeddedDoc, coalesce_ms=60_000, max_batch=2, on_bad_vectors=mode)
    records: list[dict[str, Any]] = [{"id": 1, "text": None}, {"id": 2, "text": "fine"}]
    results = await gather(producer.enqueue_many(records))
    reference = reference_table(db_uri, "reference", EmbeddedDoc)
    assert [r == WRITTEN for r in results] == add_one_by_one(
        reference, records, on_bad_vectors=mode
    )
    assert rows(db_uri, "docs") == rows(db_uri, "reference")
    if mode == "error":
        assert isinstance(results[0], RecordRejected)
        assert "field 'vector': no vector, as 'text'" in str(results[0])
    else:
        assert results == [WRITTEN] * 2


async def test_a_failing_embedding_function_fails_its_batch_and_the_writer_keeps_serving(
    start_writer: StartWriter, producer: Producer, db_uri: str
) -> None:
    start_writer(schema=EmbeddedDoc, coalesce_ms=60_000, max_batch=2)
    failing = [{"id": 1, "text": "fine"}, {"id": 2, "text": FAILING_TEXT}]
    results = await gather(producer.enqueue_many(failing))
    for result in results:
        assert isinstance(result, WriteFailed), result
        assert result.error_type == "EmbeddingFailed"
        assert "503 Service Unavailable" in str(result)
    assert (
        await gather(producer.enqueue_many([{"id": 3, "text": "a"}, {"id": 4, "text": "b"}]))
        == [WRITTEN] * 2
    )
    assert [row["id"] for row in rows(db_uri, "docs")] == [3, 4]


def _without_tests_on_path(**extra: str) -> dict[str, str]:
    env = cli_env(**extra)
    env["PYTHONPATH"] = os.environ.get("PYTHONPATH", "")
    return env


def test_the_writer_cli_computes_vectors_with_a_function_from_a_module_it_imports(
    redis_url: str, db_uri: str, producer: Producer, tmp_path: Path
) -> None:
    reference_table(db_uri, "docs", EmbeddedDoc)  # made by LanceDB: the writer opens it
    env = _without_tests_on_path(LANCEQUEUE_REDIS=redis_url, LANCEQUEUE_DB=db_uri)
    process = WriterProcess(
        ["--table", "docs", "--import", "tests.fake_embeddings"],
        tmp_path / "writer.log",
        env,
        command=[str(CONSOLE_SCRIPT)],
        cwd=REPO,  # tests/ is found here, as the current directory
    )
    try:
        producer.write({"id": 1, "text": "hello"}, 60)
    finally:
        process.close()
    assert rows(db_uri, "docs") == [{"id": 1, "text": "hello", "vector": embed("hello")}]


def test_a_writer_cli_lacking_the_import_names_the_embedding_function_it_needs(
    redis_url: str, db_uri: str, tmp_path: Path
) -> None:
    reference_table(db_uri, "docs", EmbeddedDoc)
    env = _without_tests_on_path(LANCEQUEUE_REDIS=redis_url, LANCEQUEUE_DB=db_uri)
    process = WriterProcess(
        ["--table", "docs"], tmp_path / "writer.log", env, [str(CONSOLE_SCRIPT)], REPO
    )
    assert process.wait(60) == 1
    assert "'lancequeue-test-hash', which is not registered" in process.log()
    assert "--import MODULE" in process.log()


def test_an_import_that_cannot_be_loaded_is_a_usage_error_naming_it(redis_url: str) -> None:
    done = run_cli(
        "writer", "--table", "docs", "--redis", redis_url, "--import", "no_such_module_here"
    )
    assert done.returncode == 2
    assert "--import 'no_such_module_here': cannot import it" in done.stderr
