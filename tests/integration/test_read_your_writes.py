"""Read your writes: a written record's future holds the table version its commit made, and a
reader that checks out that version sees the record (a delete's: sees its rows gone)."""

from __future__ import annotations

import asyncio

import lancedb
import pyarrow as pa
import redis

from lancequeue.producer import WriteResult
from tests.drivers import Driven, MakeDriven
from tests.support import StartWriter, async_wait_for, queued_records, record, writer_serving

SCHEMA = pa.schema([pa.field("id", pa.int64()), pa.field("text", pa.string())])


def ids_at(db_uri: str, version: int) -> list[int]:
    table = lancedb.connect(db_uri).open_table("docs")
    table.checkout(version)
    return sorted(table.to_arrow().column("id").to_pylist())


async def test_a_written_record_is_visible_in_the_version_its_future_names(
    start_writer: StartWriter, make: MakeDriven, client: redis.Redis, db_uri: str
) -> None:
    start_writer(coalesce_ms=20)
    await writer_serving(client)  # a producer started before any writer: see the next test
    made = make()
    versions = []
    for i in range(5):
        future = await made.enqueue(record(i))
        result = await future
        assert isinstance(result, WriteResult) and result.version is not None
        assert ids_at(db_uri, result.version) == list(range(i + 1))  # its own and the earlier
        versions.append(result.version)
    assert versions == sorted(set(versions))  # one commit each, in order
    futures = await made.enqueue_many([record(i) for i in range(5, 10)])
    results = [await future for future in futures]
    # a batch's records share its commit's version
    assert {r.version for r in results} == {results[0].version}
    assert results[0].version is not None and ids_at(db_uri, results[0].version) == list(range(10))


async def test_records_sent_before_any_writer_published_its_protocol_say_no_version(
    start_writer: StartWriter, made: Driven, client: redis.Redis, db_uri: str
) -> None:
    future = await made.enqueue(record(1))  # sent before the writer: in the first protocol
    await async_wait_for(
        lambda: asyncio.to_thread(queued_records, client), 30, "the record in Redis"
    )
    start_writer(coalesce_ms=20)
    assert await future == WriteResult(None)
    assert ids_at(db_uri, lancedb.connect(db_uri).open_table("docs").version) == [1]


async def test_an_upsert_s_and_a_delete_s_version_shows_their_effect(
    start_writer: StartWriter, make: MakeDriven, client: redis.Redis, db_uri: str
) -> None:
    start_writer(coalesce_ms=20, upsert_key="id", schema=SCHEMA)
    await writer_serving(client)
    made = make()
    first = await (await made.enqueue({"id": 1, "text": "first"}))
    second = await (await made.enqueue({"id": 1, "text": "second"}))
    deleted = await (await made.enqueue_delete({"id": 1}))
    assert first.version is not None and second.version is not None
    assert deleted.version is not None
    assert first.version < second.version < deleted.version
    table = lancedb.connect(db_uri).open_table("docs")
    table.checkout(second.version)
    assert table.to_arrow().to_pylist() == [{"id": 1, "text": "second"}]
    assert ids_at(db_uri, deleted.version) == []
