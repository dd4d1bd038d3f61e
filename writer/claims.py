"""Claiming a batch in Redis before committing it.

A producer abandons a record it has had no answer for by its deadline, atomically in Redis
(``common.protocol.ABANDON_SCRIPT``), unless a writer claimed it first; the writer claims the
records of a batch before it writes them, and never writes one its producer abandoned. Exactly
one of the two wins, so a producer told ``WriteTimeout`` can trust it, and a record the writer
claimed gets its true answer even if that comes after the deadline.

One round trip per batch does it all: Redis time (the batch's build time, which deadlines are
checked against), the lease (a replaced writer claims nothing), and per producer its settled
sequence number, the claim, and the sequence numbers it abandoned. A script, so it runs on the
node serving the table's keys under Redis Cluster.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lancequeue.common.errors import WriterReplaced
from lancequeue.common.keys import TableKeys
from lancequeue.common.lua_scripts import lua_script
from lancequeue.common.protocol import ABANDONED_TTL_MS, SEQ_JUMP_LIMIT
from lancequeue.common.script_calls import ScriptCalls
from lancequeue.writer.entries import Entry

CLAIM_TTL_MS = ABANDONED_TTL_MS
"""Expiry of a producer's claim key, renewed at each claim: as long as its abandoned set is
kept, so no record outlives the claim on it (a commit slower than that is not foreseen)."""

_CLAIM = lua_script(__name__, "claim_records.lua")
"""Claim a batch's records for this writer, if it holds the lease (``lua/claim_records.lua``)."""

Ranges = dict[str, list[tuple[int, int]]]
"""Per producer id, the sequence numbers of its records in a batch: one (first, last) range per
stream entry, in stream order."""


@dataclass(frozen=True)
class ProducerClaim:
    """What Redis said of one producer's records in the batch."""

    seen: int
    """Its highest settled sequence number (-1: none)."""
    refused: frozenset[int] = frozenset()
    """Positions (0-based) of its ranges refused: too far ahead of anything settled or claimed."""
    abandoned: frozenset[int] = frozenset()
    """Its sequence numbers in the batch that it abandoned."""


@dataclass(frozen=True)
class BatchClaim:
    now_ms: int
    """Redis server time: the batch's build time."""
    producers: dict[str, ProducerClaim] = field(default_factory=dict)


class Claimer:
    """Claims batches of one table for the writer holding ``lease_value``."""

    def __init__(
        self, calls: ScriptCalls, keys: TableKeys, lease_value: str, lease_ms: int
    ) -> None:
        self._keys = keys
        self._lease_value = lease_value
        self._lease_ms = lease_ms
        self._calls = calls
        self._script = calls.register(_CLAIM)

    async def claim(self, ranges: Ranges) -> BatchClaim:
        """Claim the ranges' records; raises ``WriterReplaced`` if another writer holds the
        lease (nothing is claimed then)."""
        producers = list(ranges)
        keys = [self._keys.stream, self._keys.lease]
        args: list[str | int] = [self._lease_value, self._lease_ms, CLAIM_TTL_MS]
        args.append(SEQ_JUMP_LIMIT)
        for producer in producers:
            keys += [
                self._keys.seen(producer),
                self._keys.claim(producer),
                self._keys.abandoned(producer),
            ]
            args.append(len(ranges[producer]))
            for first, last in ranges[producer]:
                args += [first, last]
        seconds, microseconds, holder, results = await self._calls(self._script, keys, args)
        if holder:
            text = holder.decode() if isinstance(holder, bytes) else str(holder)
            raise WriterReplaced(f"writer {text.split(' ')[0]} holds the lease now")
        claims = {
            producer: ProducerClaim(
                int(seen),
                frozenset(int(position) - 1 for position in refused),
                frozenset(int(member) for member in abandoned),
            )
            for producer, (seen, refused, abandoned) in zip(producers, results, strict=True)
        }
        return BatchClaim(int(seconds) * 1000 + int(microseconds) // 1000, claims)

    async def now_ms(self) -> int:
        """Redis time (checking the lease, claiming nothing)."""
        return (await self.claim({})).now_ms


def entry_ranges(entries: list[Entry]) -> Ranges:
    """Each producer's sequence numbers in the batch, one range per stream entry."""
    ranges: Ranges = {}
    previous: bytes | None = None
    for entry in entries:
        if entry.producer_id is None:
            continue
        producer_ranges = ranges.setdefault(entry.producer_id, [])
        if entry.part and entry.entry_id == previous:
            producer_ranges[-1] = (producer_ranges[-1][0], entry.seq)
        else:
            producer_ranges.append((entry.seq, entry.seq))
        previous = entry.entry_id
    return ranges


def refused_entries(entries: list[Entry], claimed: BatchClaim) -> set[bytes]:
    """The stream ids of entries whose sequence numbers the claim refused."""
    refused: set[bytes] = set()
    position: dict[str, int] = {}
    previous: bytes | None = None
    for entry in entries:
        producer = entry.producer_id
        if producer is None or (entry.part and entry.entry_id == previous):
            continue
        previous = entry.entry_id
        index = position.get(producer, 0)
        position[producer] = index + 1
        if index in claimed.producers[producer].refused:
            refused.add(entry.entry_id)
    return refused
