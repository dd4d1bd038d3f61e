"""``read_status``: what ``lancequeue status`` shows, read from Redis alone."""

from __future__ import annotations

import redis

from lancequeue.cli.status import format_status
from lancequeue.common.keys import GROUP, TableKeys
from lancequeue.common.status import read_status


def test_the_oldest_entry_read_and_not_acked_is_shown_with_its_age(client: redis.Redis) -> None:
    stream = TableKeys("docs").stream
    client.xgroup_create(stream, GROUP, id="0", mkstream=True)
    first = client.xadd(stream, {"rec": b"x"}, id="1700000000000-0")
    client.xadd(stream, {"rec": b"y"})
    client.xreadgroup(GROUP, "some-writer", {stream: ">"}, count=2)  # read, never acked
    status = read_status(client, "docs")
    assert status["pending"] == 2 and first == b"1700000000000-0"
    assert status["oldest_pending_ms"] == 1_700_000_000_000
    shown = format_status(status)
    assert "oldest pending" in shown and "s ago" in shown
    client.xack(stream, GROUP, first)
    assert read_status(client, "docs")["oldest_pending_ms"] > 1_700_000_000_000
