"""Which waiting records a reply in ranges names (``common.protocol.decode_reply``).

A reply may name any range, honest or forged: what reading it costs stays about its bytes.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Mapping

_NARROW_RANGE = 64
"""A reply whose ranges name no more numbers than are waiting, or than this many a range, is
walked number by number (an honest one names records that wait); any other is swept once
against the waiting numbers in order. Either way a reply costs about its bytes plus the records
waiting, whatever ranges it names."""


def written_waiting(
    waiting: Mapping[int, object], written: list[tuple[int, int, bytes]]
) -> Iterator[tuple[int, bytes]]:
    """Each waiting number a range of ``written`` names, with that range's digest."""
    named = sum(last - first + 1 for first, last, _ in written)
    if named <= max(len(waiting), _NARROW_RANGE * len(written)):
        for first, last, digest in written:
            for seq in range(first, last + 1):
                if seq in waiting:
                    yield seq, digest
        return
    ordered = sorted(waiting)
    position = 0
    for first, last, digest in sorted(written):
        position = bisect.bisect_left(ordered, first, position)
        while position < len(ordered) and ordered[position] <= last:
            yield ordered[position], digest
            position += 1
