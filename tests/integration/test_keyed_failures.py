"""Upserts and deletes by key when the table refuses or fails a change (``keyed_commits.py``),
for both producers: an answer always says what the table holds, and a refused change gives way
to the operation sent before it on its key."""

from __future__ import annotations

from typing import Any

import lancedb
import pytest

from lancequeue.common.errors import RecordRejected, WriteFailed
from tests.drivers import Driven
from tests.integration.test_upserts import SCHEMA, rows
from tests.support import WRITTEN, StartWriter, flush_recorder


async def outcomes(futures: list[Any]) -> list[str]:
    """Each future's outcome: ``ok``, or the name of the error it raised."""
    found = []
    for future in futures:
        try:
            assert await future == WRITTEN
            found.append("ok")
        except (RecordRejected, WriteFailed) as exc:
            found.append(type(exc).__name__)
    return found


async def test_a_refused_upsert_gives_way_to_the_operation_sent_before_it_on_its_key(
    start_writer: StartWriter, made: Driven, db_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LANCEQUEUE_REFUSE", "n=99")  # the table refuses rows with n 99
    flushes, on_flushed = flush_recorder()
    start_writer(upsert_key="id", schema=SCHEMA, coalesce_ms=200, on_flushed=on_flushed)
    await made.write_many([{"id": i, "text": "old", "n": 0} for i in (1, 2, 3)])
    before = len(flushes)
    futures = [
        await made.enqueue({"id": 1, "text": "new", "n": 1}),
        await made.enqueue({"id": 1, "text": "refused", "n": 99}),  # 1 stays "new"
        await made.enqueue_delete({"id": 2}),
        await made.enqueue({"id": 2, "text": "refused", "n": 99}),  # 2 stays deleted
        await made.enqueue({"id": 3, "text": "refused", "n": 99}),  # 3 stays as it was
        await made.enqueue({"id": 4, "text": "kept", "n": 4}),
    ]
    assert await outcomes(futures) == [
        *("ok", "RecordRejected", "ok", "RecordRejected", "RecordRejected", "ok")
    ]
    table = rows(db_uri)
    assert {key: row["text"] for key, row in table.items()} == {1: "new", 3: "old", 4: "kept"}
    # the hook gets the rows written, in stream order, though 1's was written in a later round
    assert [row["id"] for flush in flushes[before:] for row in flush] == [1, 4]


async def test_a_refused_delete_is_rejected_alone_and_its_key_keeps_the_upsert_before_it(
    start_writer: StartWriter, made: Driven, db_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LANCEQUEUE_REFUSE", "id=7")  # every change of key 7 is refused
    start_writer(upsert_key="id", schema=SCHEMA, coalesce_ms=200)
    await made.write({"id": 8, "text": "old", "n": 0})
    futures = [
        await made.enqueue({"id": 7, "text": "first", "n": 1}),
        await made.enqueue_delete({"id": 7}),
        await made.enqueue_delete({"id": 8}),
        await made.enqueue({"id": 9, "text": "kept", "n": 9}),
    ]
    # the delete of 7 is refused, so 7's upsert before it is tried: refused too
    assert await outcomes(futures) == ["RecordRejected", "RecordRejected", "ok", "ok"]
    assert sorted(rows(db_uri)) == [9]


@pytest.mark.parametrize("upsert", [True, False], ids=["upsert-table", "append-table"])
async def test_deletes_committed_before_the_rows_failed_are_answered_written(
    start_writer: StartWriter,
    made: Driven,
    db_uri: str,
    monkeypatch: pytest.MonkeyPatch,
    upsert: bool,
) -> None:
    monkeypatch.setenv("LANCEQUEUE_FAIL", "n=99")  # committing rows with n 99 fails (I/O)
    key = {"upsert_key": "id"} if upsert else {"delete_key": "id"}
    start_writer(schema=SCHEMA, coalesce_ms=200, flush_retries=0, **key)
    await made.write_many([{"id": i, "text": "old", "n": 0} for i in (1, 2)])
    futures = [
        await made.enqueue_delete({"id": 2}),  # committed first, in a commit of its own
        await made.enqueue({"id": 3, "text": "lost", "n": 99}),  # its commit fails
    ]
    assert await outcomes(futures) == ["ok", "WriteFailed"]  # each as the table has it
    assert sorted(rows(db_uri)) == [1]
    await made.write({"id": 3, "text": "again", "n": 3})  # sent again: written once
    assert sorted(rows(db_uri)) == [1, 3]


async def test_a_delete_before_the_table_exists_is_checked_like_any_other(
    start_writer: StartWriter, made: Driven, db_uri: str
) -> None:
    start_writer(upsert_key="id")  # no schema: the first row makes the table
    futures = [
        await made.enqueue_delete({"id": 1}),
        await made.enqueue_delete({"id": "a string key"}),  # the column's type is not known
        await made.enqueue_delete({"wrong": 1}),
        await made.enqueue_delete({"id": 1, "extra": 2}),
        await made.enqueue_delete({"id": True}),
        await made.enqueue_delete({"id": [1]}),
    ]
    assert await outcomes(futures) == ["ok", "ok", *["RecordRejected"] * 4]
    await made.write({"id": 1, "text": "first", "n": 1})
    assert lancedb.connect(db_uri).open_table("docs").count_rows() == 1
