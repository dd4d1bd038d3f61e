"""The writer's reading of stream entries (no Redis)."""

from __future__ import annotations

import dataclasses

import pytest

from lancequeue.common.columns import encode_columns, encode_fields
from lancequeue.common.entries import columnar_entry_fields
from lancequeue.common.keys import TableKeys
from lancequeue.common.protocol import FIELD_COLUMNS, FIELD_COUNT, FIELD_NONCE
from lancequeue.writer.entries import Entry, read_entries
from tests.support import record

KEYS = TableKeys("docs")


@pytest.mark.parametrize(
    ("version", "reply_key"),
    [(b"3", KEYS.reply("p")), (b"5", KEYS.reply("p")), (b"5", "not:a:reply:key"), (b"9", None)],
)
def test_a_columnar_entrys_records_are_the_entries_init_makes(
    version: bytes, reply_key: str | None
) -> None:
    """Its records are made without ``Entry.__init__`` (for speed): every field must still be
    what ``__init__`` and ``__post_init__`` make of the same values."""
    rows = [record(1), {"id": 2, "meta": {1: "a key that is not a string"}}, record(3)]
    body = encode_columns([encode_fields(row) for row in rows])
    fields = columnar_entry_fields(reply_key or KEYS.reply("p"), 7, 3, body, 60_000, version)
    if version == b"5":
        fields += [FIELD_NONCE, b"12345678"]
    raw = {
        name if isinstance(name, bytes) else name.encode(): (
            value if isinstance(value, bytes) else value.encode()
        )
        for name, value in zip(fields[::2], fields[1::2], strict=True)
    }
    if reply_key is not None:
        raw[b"reply"] = reply_key.encode()
    parts = read_entries(KEYS, b"1000-0", raw)
    assert len(parts) == 3
    shared = {
        name: value for name, value in raw.items() if name not in (FIELD_COUNT, FIELD_COLUMNS)
    }
    for index, part in enumerate(parts):
        made = Entry(
            part.entry_id,
            part.reply_key,
            7 + index,
            None,
            part.rejection,
            part.deadline_ms,
            shared,
            index,
            part.block,
            part.version,
        )
        for field in dataclasses.fields(Entry):
            assert getattr(part, field.name) == getattr(made, field.name), field.name
    if version in (b"3", b"5"):
        assert parts[0].rejection is None and "map keys must be strings" in str(parts[1].rejection)
    else:
        assert all("unsupported protocol version" in str(part.rejection) for part in parts)
