"""Upserts and deletes by key through the queue (``--upsert-key``, ``--delete-key``), for both
producers: the operation sent last for a key wins, within a batch and across batches."""

from __future__ import annotations

import asyncio
from typing import Any

import lancedb
import pyarrow as pa
import pytest

from lancequeue.common.errors import ConfigError, RecordRejected
from lancequeue.writer import Writer
from tests.drivers import Driven
from tests.support import WRITTEN, StartWriter, async_wait_for

SCHEMA = pa.schema(
    [pa.field("id", pa.int64()), pa.field("text", pa.string()), pa.field("n", pa.int64())]
)


def rows(db_uri: str, table: str = "docs") -> dict[Any, dict[str, Any]]:
    """The table's rows by id (a repeated id fails the test: keys are unique here)."""
    found = lancedb.connect(db_uri).open_table(table).to_arrow().to_pylist()
    by_id = {row["id"]: row for row in found}
    assert len(by_id) == len(found), f"repeated ids: {sorted(row['id'] for row in found)}"
    return by_id


async def test_the_record_sent_last_for_a_key_wins_within_and_across_batches(
    start_writer: StartWriter, made: Driven, db_uri: str
) -> None:
    start_writer(upsert_key="id", schema=SCHEMA, max_batch=64, coalesce_ms=50)
    # 300 records over 30 ids, each id written ten times, in batches of up to 64.
    futures = await made.enqueue_many([{"id": i % 30, "text": f"v{i}", "n": i} for i in range(300)])
    for future in futures:
        await future
    table = rows(db_uri)
    assert sorted(table) == list(range(30))
    assert all(table[key]["n"] == 270 + key for key in table)  # the last of each id


async def test_a_delete_goes_in_stream_order_with_the_upserts_around_it(
    start_writer: StartWriter, made: Driven, db_uri: str
) -> None:
    start_writer(upsert_key="id", schema=SCHEMA, coalesce_ms=200)
    await made.write_many([{"id": i, "text": "first", "n": 0} for i in range(4)])
    # In one batch: 0 deleted; 1 deleted then written again; 2 written then deleted; 5 (never
    # written) deleted; 3 untouched.
    futures = [
        await made.enqueue_delete({"id": 0}),
        await made.enqueue_delete({"id": 1}),
        await made.enqueue({"id": 1, "text": "again", "n": 1}),
        await made.enqueue({"id": 2, "text": "gone", "n": 2}),
        await made.enqueue_delete({"id": 2}),
        await made.enqueue_delete({"id": 5}),
    ]
    for future in futures:
        assert await future == WRITTEN
    table = rows(db_uri)
    assert sorted(table) == [1, 3]
    assert table[1]["text"] == "again"
    await made.delete({"id": 3})  # a batch of one delete
    assert sorted(rows(db_uri)) == [1]


async def test_deletes_on_an_append_table_remove_earlier_rows_of_the_key_only(
    start_writer: StartWriter, made: Driven, db_uri: str
) -> None:
    start_writer(delete_key="id", schema=SCHEMA, coalesce_ms=200)
    await made.write_many([{"id": 1, "text": "a", "n": 0}, {"id": 1, "text": "b", "n": 1}])
    futures = [
        await made.enqueue({"id": 1, "text": "c", "n": 2}),  # deleted by the delete after it
        await made.enqueue_delete({"id": 1}),
        await made.enqueue({"id": 1, "text": "d", "n": 3}),  # after the delete: stays
        await made.enqueue({"id": 1, "text": "e", "n": 4}),  # appended: ids repeat here
    ]
    for future in futures:
        assert await future == WRITTEN
    found = lancedb.connect(db_uri).open_table("docs").to_arrow().to_pylist()
    assert sorted(row["text"] for row in found) == ["d", "e"]


async def test_the_rejection_rules_of_appends_hold_for_upserts_and_deletes(
    start_writer: StartWriter, made: Driven, db_uri: str
) -> None:
    start_writer(upsert_key="id", schema=SCHEMA, coalesce_ms=200)
    futures = [
        await made.enqueue({"id": 1, "text": "ok", "n": 1}),
        await made.enqueue({"id": "one", "text": "wrong type", "n": 1}),
        await made.enqueue({"text": "no key", "n": 1}),
        await made.enqueue({"id": 2, "text": "unknown field", "zzz": 1}),
        await made.enqueue_delete({"id": "two"}),
        await made.enqueue_delete({"id": 1, "text": "not a key column"}),
        await made.enqueue_delete({"text": "no key column"}),
    ]
    assert await futures[0] == WRITTEN
    reasons = ["'id'", "'id'", "'zzz'", "'id'", "'text'", "'id'"]
    for future, what in zip(futures[1:], reasons, strict=True):
        with pytest.raises(RecordRejected, match=what):
            await future
    assert sorted(rows(db_uri)) == [1]


async def test_a_delete_to_a_table_without_key_columns_is_rejected_and_nothing_else_is_lost(
    start_writer: StartWriter, made: Driven, db_uri: str
) -> None:
    start_writer(schema=SCHEMA, coalesce_ms=200)
    kept = await made.enqueue({"id": 1, "text": "kept", "n": 1})
    refused = await made.enqueue_delete({"id": 1})
    assert await kept == WRITTEN
    with pytest.raises(RecordRejected, match="no key columns"):
        await refused
    assert sorted(rows(db_uri)) == [1]


async def test_a_delete_before_the_table_exists_deletes_nothing_and_succeeds(
    start_writer: StartWriter, made: Driven, db_uri: str
) -> None:
    start_writer(upsert_key="id")
    await made.delete({"id": 7})
    await made.write({"id": 7, "text": "after", "n": 1})
    assert sorted(rows(db_uri)) == [7]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"upsert_key": "missing"}, "no such column"),
        ({"upsert_key": "text,text"}, "names a column twice"),
        ({"delete_key": "n", "upsert_key": "id"}, "differs from upsert_key"),
        ({"upsert_key": 'user"id'}, "double quote or a backtick"),
    ],
)
async def test_a_key_the_table_cannot_have_stops_the_writer_with_a_clear_error(
    redis_url: str, db_uri: str, settings: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        await Writer(
            table="docs", redis_url=redis_url, db_uri=db_uri, schema=SCHEMA, **settings
        ).run()


async def test_compaction_keeps_up_beside_upserts_that_touch_its_rows(
    start_writer: StartWriter, made: Driven, db_uri: str, caplog: pytest.LogCaptureFixture
) -> None:
    start_writer(upsert_key="id", schema=SCHEMA, max_batch=20, coalesce_ms=20, compact_every="2")
    for number in range(15):  # each round updates every row the table holds
        await made.write_many(
            [{"id": i, "text": f"round {number}", "n": number} for i in range(40)]
        )
    table = rows(db_uri)
    assert sorted(table) == list(range(40)) and {row["n"] for row in table.values()} == {14}

    def fragments() -> int:
        return len(lancedb.connect(db_uri).open_table("docs").to_lance().get_fragments())

    # the last commits' compaction runs beside their answers: wait for it
    await async_wait_for(
        lambda: asyncio.to_thread(lambda: fragments() <= 6), 30, "compaction to catch up"
    )
    # Lance rebases no compaction over a merge of its rows: none may have failed for it
    assert "compaction failed" not in caplog.text


async def test_an_upsert_batch_the_table_refuses_is_bisected_so_only_the_refused_record_fails(
    start_writer: StartWriter, made: Driven, db_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LANCEQUEUE_REFUSE", "id=13")  # the table refuses the record with id 13
    start_writer(upsert_key="id", schema=SCHEMA, max_batch=8, coalesce_ms=60_000)
    futures = await made.enqueue_many([{"id": i, "text": "t", "n": i} for i in range(10, 18)])
    outcomes = []
    for future in futures:
        try:
            outcomes.append(await future)
        except RecordRejected as exc:
            assert "the table refused it" in str(exc)
            outcomes.append(None)
    assert [outcome is None for outcome in outcomes] == [i == 13 for i in range(10, 18)]
    assert sorted(rows(db_uri)) == [10, 11, 12, 14, 15, 16, 17]
    # the batch's last commit names the version all its rows are visible in
    assert len({outcome.version for outcome in outcomes if outcome is not None}) == 1
