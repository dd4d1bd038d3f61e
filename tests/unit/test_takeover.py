"""A writer that takes a table over reads the table as it is then, not as it was when it
started: a table another writer created and committed to meanwhile is fenced, and what that
writer committed is answered from its watermark, never written twice."""

from __future__ import annotations

from pathlib import Path

import lance

from lancequeue.common.codec import encode_record
from lancequeue.common.entries import entry_fields
from lancequeue.common.keys import TableKeys
from lancequeue.writer.claims import BatchClaim, ProducerClaim, Ranges, entry_ranges
from lancequeue.writer.entries import Entry, read_entries
from lancequeue.writer.flush import BatchSettler
from lancequeue.writer.refusals import RetryPolicy
from lancequeue.writer.table import TableSink
from lancequeue.writer.watermark import FENCE
from tests.support import FixedToken, record

KEYS = TableKeys("docs")
EPOCH = "epoch-1"


def entries(first: int, count: int) -> list[Entry]:
    """Stream entries of one producer: records ``first``... with sequence numbers to match."""
    made: list[Entry] = []
    for i in range(first, first + count):
        fields = entry_fields(KEYS.reply("p"), i, encode_record(record(i)), 60_000)
        pairs = dict(zip(fields[::2], fields[1::2], strict=True))
        raw = {
            (k if isinstance(k, bytes) else k.encode()): (v if isinstance(v, bytes) else v.encode())
            for k, v in pairs.items()
        }
        made += read_entries(KEYS, f"1000-{i}".encode(), raw)
    return made


async def nothing_claimed(ranges: Ranges) -> BatchClaim:
    """The claim of a batch no producer abandoned, at a time before every deadline."""
    return BatchClaim(1000, {producer: ProducerClaim(-1) for producer in ranges})


async def open_sink(db_uri: str, token: int) -> TableSink:
    sink, watermark = await TableSink.open(
        db_uri, "docs", None, 1 << 24, FixedToken(token), f"w{token}"
    )
    assert watermark is None
    return sink


async def land(sink: TableSink, batch: list[Entry]) -> dict[str, object]:
    settler = BatchSettler(sink, RetryPolicy(0, 10))
    prepared = await settler.prepare(batch, EPOCH, await nothing_claimed(entry_ranges(batch)))

    settlement = await settler.commit(await settler.write(prepared))
    return settlement.answers


async def test_a_table_a_replaced_writer_created_and_committed_to_is_fenced_not_written_twice(
    tmp_path: Path,
) -> None:
    db_uri = str(tmp_path / "db")
    # Both writers opened the database before the table existed: the old one (token 1) stalled
    # with records it had read, the new one (token 2) took over and replays the same records.
    old = await open_sink(db_uri, 1)
    new = await open_sink(db_uri, 2)
    batch = entries(1, 10)
    old_answers = await land(old, batch)  # the old writer creates the table and commits them
    assert set(old_answers.values()) == {None}

    new_answers = await land(new, entries(1, 10))
    assert new_answers == old_answers  # answered from the old writer's watermark
    dataset = lance.dataset(f"{db_uri}/docs.lance")
    assert dataset.count_rows() == 10  # not 20
    assert dataset.metadata[FENCE] == "2"  # fenced by the new writer as it found the table
