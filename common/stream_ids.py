"""Redis stream entry ids, ``<ms>-<seq>``: every place that reads one reads it here."""

from __future__ import annotations

import re

_STREAM_ID = re.compile(r"\d+-\d+")


def parse_id(entry_id: bytes | str) -> tuple[int, int]:
    """A stream id as a comparable ``(ms, seq)`` pair (``<ms>`` alone is ``(ms, 0)``, as Redis
    reads it); raises ``ValueError`` if malformed."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def id_ms(entry_id: bytes | str) -> int:
    """The time in an id: Redis's clock, in ms, as the entry was added. Raises ``ValueError`` if
    malformed."""
    if isinstance(entry_id, bytes):
        return int(entry_id.split(b"-", 1)[0])
    return int(entry_id.split("-", 1)[0])


def is_stream_id(text: str) -> bool:
    """Whether ``text`` is a whole id, ``<ms>-<seq>``, as a user would name an entry."""
    return _STREAM_ID.fullmatch(text) is not None
