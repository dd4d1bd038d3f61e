"""One record on its way from ``enqueue`` to the writer's answer, as the buffer, the sender
and the outbox hold it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from lancequeue.common.columns import EncodedRecord
from lancequeue.common.errors import LancequeueError

F = TypeVar("F")
"""A driver's future type (``concurrent.futures.Future`` or ``asyncio.Future``)."""
Fail = Callable[[F, LancequeueError], None]
"""Fails a future with an error (a no-op if it is resolved already)."""


@dataclass(eq=False, slots=True)
class Outgoing(Generic[F]):
    """One record on its way: encoded, with its future and deadline."""

    record: EncodedRecord
    """The record, encoded; ``EMPTY`` once Redis confirmed it is in the stream."""
    future: F
    deadline: float
    """``time.monotonic()`` of the enqueue call plus its timeout."""
    timeout_s: float
    """The enqueue call's timeout (records sent together share one)."""
    digests: tuple[bytes, ...] = ()
    """What the writer's ok answer may carry for this record: the digest of each form it was
    sent in (``EntryMaker.script_args``); any other is another client's record."""
    seq: int = 0
    """Its sequence number, given when it is first sent (0 until then)."""
    maybe_sent: bool = False
    """A send of it got no answer from Redis: it may be in the stream (perhaps twice). It then
    fails only by the writer's answer or, lacking one, once abandoned after its deadline."""
    confirmed: bool = False
    """Redis confirmed it is in the stream."""
    epoch: str = ""
    """The stream's epoch (config hash) when it was first sent, '' if none was known."""
    claimed: bool = False
    """Its abandonment came too late: a writer claimed it and owes it its true answer."""
    delete: bool = False
    """A delete by key: ``record`` is the key (sent as an entry of its own, ``del``)."""

    @property
    def enqueued_at(self) -> float:
        return self.deadline - self.timeout_s
