"""The watermark: how far into the stream the table's commits reach, stored with the data.

Every append commit carries, in its Lance transaction properties, the stream id of the last
entry it settled, the entries up to there that it did not write (rejected, expired, duplicates)
with their answers, the stream's epoch, and the writer's fencing token. The commit and its
watermark are one atomic write, so after a crash the next writer knows exactly which pending
entries are already in the table: those at or below the watermark and not listed as skipped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from lancequeue.common.stream_ids import parse_id

PREFIX = "lancequeue."
EPOCH = PREFIX + "epoch"
LAST_ID = PREFIX + "watermark"
SKIPPED = PREFIX + "skipped"
FENCE = PREFIX + "fence"
WRITER = PREFIX + "writer"

Outcome = dict[str, str] | None
"""A record's result on the wire: None when it is in the table, else an error map."""

SKIPPED_SILENTLY = {"error": "", "message": "", "cause": ""}
"""The answer recorded for an entry acked without an answer (a duplicate, a foreign reply key)."""


@dataclass(frozen=True)
class Watermark:
    """Where a commit leaves the stream: every entry up to ``last_id`` is settled."""

    epoch: str
    last_id: str
    skipped: dict[str, Outcome] = field(default_factory=dict)
    """Records at or below ``last_id`` that are not in the table, by record id, with the
    answer they got (``SKIPPED_SILENTLY`` for those acked unanswered): those of the commit's
    batch, and of any batch before it not answered when it committed."""

    def covers(self, epoch: str, entry_id: bytes) -> bool:
        """Whether the entry was settled by the commits up to this watermark."""
        return epoch == self.epoch and parse_id(entry_id) <= parse_id(self.last_id)

    def outcome(self, record_id: str) -> Outcome:
        """The answer of a covered record (``Entry.record_id``): None (written) unless it was
        skipped."""
        return self.skipped.get(record_id, None)

    def properties(self, token: int, consumer: str) -> dict[str, str]:
        return {
            EPOCH: self.epoch,
            LAST_ID: self.last_id,
            SKIPPED: json.dumps(self.skipped, separators=(",", ":")),
            FENCE: str(token),
            WRITER: consumer,
        }

    @classmethod
    def from_properties(cls, properties: dict[str, str] | None) -> Watermark | None:
        """The watermark a commit carries, or None if it carries none (or a malformed one)."""
        if not properties or LAST_ID not in properties:
            return None
        try:
            parse_id(properties[LAST_ID])
            skipped: Any = json.loads(properties.get(SKIPPED) or "{}")
        except ValueError:
            return None
        if not isinstance(skipped, dict):
            return None
        return cls(properties.get(EPOCH, ""), properties[LAST_ID], skipped)
