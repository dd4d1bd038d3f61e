"""Every Redis key and channel name lancequeue uses, in one place.

All of a table's keys share the Redis Cluster hash tag ``{TABLE}``, so they live in one slot and
a Lua script or a MULTI may touch several of them. The writer writes only keys built here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lancequeue.common.errors import ConfigError

NAMESPACE = "lancequeue"
GROUP = "writers"
"""The one consumer group of every table stream."""

_TABLE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
_PRODUCER_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def check_table_name(table: str) -> str:
    """Return ``table`` if it is a valid table name, else raise :class:`ConfigError`."""
    if not _TABLE_NAME.fullmatch(table):
        raise ConfigError(
            f"invalid table name {table!r}: use 1-128 letters, digits, '_', '-' or '.'"
        )
    return table


@dataclass(frozen=True)
class TableKeys:
    """The Redis names that belong to one table."""

    table: str

    def __post_init__(self) -> None:
        check_table_name(self.table)

    @property
    def prefix(self) -> str:
        return f"{NAMESPACE}:{{{self.table}}}:"

    @property
    def inbox(self) -> str:
        """The list producers push entries onto (``RPUSH``, in the enqueue script): they cannot
        remove, reorder or date what others pushed. The writer moves them into ``stream``."""
        return self.prefix + "inbox"

    @property
    def inboxed(self) -> str:
        """Counter of the records in ``inbox``: raised by the enqueue script, lowered (and
        reset once the inbox is empty) by the writer as it moves entries into the stream."""
        return self.prefix + "inboxed"

    @property
    def stream(self) -> str:
        """The stream the writer reads with its consumer group: only the writer adds to it,
        moving entries from ``inbox``."""
        return self.prefix + "stream"

    @property
    def pushed_channel(self) -> str:
        """Pub/sub channel the enqueue script publishes to after pushing entries: wakes the
        writer."""
        return self.prefix + "pushed"

    @property
    def config(self) -> str:
        """Hash of the settings the writer publishes for producers (``max_queue_size``,
        ``max_batch``); written by the writer only."""
        return self.prefix + "config"

    @property
    def queued(self) -> str:
        """Counter of the records in the stream (an entry may carry several): written by the
        writer only, raised as it moves entries into the stream, lowered as it deletes them."""
        return self.prefix + "queued"

    @property
    def epoch(self) -> str:
        """Names this incarnation of the stream: set (``SETNX``) by the first producer or
        writer to find none; a new one means Redis lost its data."""
        return self.prefix + "epoch"

    @property
    def writer(self) -> str:
        """Hash describing the current writer: pid, host, start time, counters."""
        return self.prefix + "writer"

    @property
    def lease(self) -> str:
        """The live writer's lease: ``<consumer> <fencing token>``, with an expiry it renews."""
        return self.prefix + "lease"

    @property
    def fence(self) -> str:
        """Counter that hands each writer taking the lease a larger fencing token."""
        return self.prefix + "fence"

    @property
    def dead_letters(self) -> str:
        """Stream of entries set aside after ``max_deliveries`` failed deliveries."""
        return self.prefix + "dead"

    def _of_producer(self, kind: str, producer_id: str) -> str:
        if not _PRODUCER_ID.fullmatch(producer_id):
            raise ConfigError(f"invalid producer id {producer_id!r}")
        return f"{self.prefix}{kind}:{producer_id}"

    def seen(self, producer_id: str) -> str:
        """The highest sequence number of ``producer_id`` the writer has settled (dedupes
        records a producer sent again after losing the confirmation of the first send)."""
        return self._of_producer("seen", producer_id)

    def claim(self, producer_id: str) -> str:
        """The highest sequence number of ``producer_id`` the writer has claimed: taken into a
        batch it is committing, so the producer can no longer abandon it (it waits for the
        answer instead)."""
        return self._of_producer("claim", producer_id)

    def abandoned(self, producer_id: str) -> str:
        """Set of ``producer_id``'s sequence numbers it abandoned at their deadline, before any
        writer claimed them: the writer never writes them."""
        return self._of_producer("abandoned", producer_id)

    @property
    def flushed_channel(self) -> str:
        """Pub/sub channel the writer publishes to after every flush (wakes waiting producers)."""
        return self.prefix + "flushed"

    @property
    def reply_prefix(self) -> str:
        return self.prefix + "reply:"

    def reply(self, producer_id: str) -> str:
        """The reply list of one producer instance."""
        return self._of_producer("reply", producer_id)

    def reply_inflight(self, producer_id: str) -> str:
        """Reply messages the producer has popped (``BLMOVE``) but not yet settled; only the
        producer touches it (not a reply key: ``is_reply_key`` refuses the ``:inflight``)."""
        return self.reply(producer_id) + ":inflight"

    def is_reply_key(self, key: str) -> bool:
        """Whether ``key`` is a reply key of this table (the only keys a stream entry may name)."""
        if not key.startswith(self.reply_prefix):
            return False
        return bool(_PRODUCER_ID.fullmatch(key[len(self.reply_prefix) :]))
