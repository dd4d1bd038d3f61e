"""What a table's queue and writer are doing, read from Redis alone (``lancequeue status`` and the
writer's metrics show it)."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import redis

from lancequeue.common.errors import ConfigError
from lancequeue.common.keys import GROUP, NAMESPACE, TableKeys, check_table_name
from lancequeue.common.redis_client import SyncRedis
from lancequeue.common.stream_ids import id_ms


def read_status(client: SyncRedis, table: str) -> dict[str, Any]:
    """Queue depth, pending count, writer liveness and progress of ``table``."""
    keys = TableKeys(table)
    with client.pipeline(transaction=False) as pipe:
        pipe.xlen(keys.stream)
        pipe.hgetall(keys.writer)
        pipe.exists(keys.lease)
        pipe.xlen(keys.dead_letters)
        pipe.get(keys.queued)
        pipe.llen(keys.inbox)
        pipe.get(keys.inboxed)
        entries, writer_raw, alive, dead, queued, waiting, inboxed = pipe.execute()
    try:
        summary: Any = client.xpending(keys.stream, GROUP)
    except redis.ResponseError:  # no group yet: no writer ever ran
        summary = {"pending": 0}
    pending = int(summary["pending"])
    oldest = summary.get("min") if pending else None
    writer = {k.decode(): v.decode() for k, v in writer_raw.items()}

    def number(name: str) -> int | None:
        return int(writer[name]) if name in writer else None

    return {
        "table": table,
        # Records waiting, in the stream and in the inbox (an entry may carry several; at least
        # one per entry).
        "queue_depth": max(int(entries), _count(queued))
        + (max(int(waiting), _count(inboxed)) if waiting else 0),
        "queue_entries": int(entries) + int(waiting),
        "pending": pending,
        # the oldest entry read and not acked: its id's time (Redis's, when it entered the stream)
        "oldest_pending_ms": _id_ms(oldest),
        "writer_alive": bool(alive),
        "writer_state": writer.get("state"),
        "writer": writer.get("consumer"),
        "writer_since_ms": number("started_at_ms"),
        "last_flush_at_ms": number("last_flush_at_ms"),
        "batches": number("batches"),
        "rows_written": number("rows"),
        "append_ms": number("append_ms"),
        "rejected": number("rejected"),
        "failed": number("failed"),
        "expired": number("expired"),
        "duplicates_dropped": number("duplicates"),
        "recovered_from_watermark": number("recovered"),
        "dead_letters": int(dead),
        "table_rows": number("table_rows"),
        "table_version": number("table_version"),
        "deleted": number("deleted"),
        # each index: name, kind, columns, indexed_rows, unindexed_rows (the newest upkeep's)
        "indexes": _indexes(writer.get("indexes")),
    }


def _indexes(raw: str | None) -> list[dict[str, Any]]:
    try:
        value = json.loads(raw) if raw else []
    except ValueError:
        return []
    return [index for index in value if isinstance(index, dict)] if isinstance(value, list) else []


def known_tables(client: SyncRedis) -> list[str]:
    """The tables this Redis holds keys of (a config hash, a stream or an inbox), sorted."""
    found: set[str] = set()
    for kind in ("config", "stream", "inbox"):
        for key in client.scan_iter(match=f"{NAMESPACE}:{{*}}:{kind}", count=1000):
            name = key.decode(errors="replace") if isinstance(key, bytes) else str(key)
            with contextlib.suppress(ConfigError):  # not one of ours after all
                found.add(check_table_name(name[len(NAMESPACE) + 2 : -(len(kind) + 2)]))
    return sorted(found)


def _id_ms(entry_id: bytes | str | None) -> int | None:
    if entry_id is None:
        return None
    try:
        return id_ms(entry_id)
    except ValueError:
        return None


def _count(raw: bytes | None) -> int:
    try:
        return max(int(raw or 0), 0)
    except ValueError:
        return 0
