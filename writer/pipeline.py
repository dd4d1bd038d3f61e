"""Overlapping a flush's stages: while one batch is committed, the next one's data files are
written, the one after is read and built, and the one before is answered.

Two lanes, each strictly ordered:

* the table lane runs appends in the order they were submitted. An append writes its data
  files, then waits until the batches before it are answered (``answered()``), then commits:
  the next append may write its files meanwhile, but commits follow one another in submission
  order, the single-writer commit order the watermark relies on (a batch is answered only after
  its commit, and the next commits only once it is answered);
* the answer lane runs each batch's answers after its own append returned and after the
  answers of the batch before it: nothing is answered before its commit, and producers hear
  about batches in stream order.

``submit`` returns once the batch's append has started, which is once the append before it has
written its data files: the caller (the reader) is never more than two batches ahead of the
table, so memory stays bounded by a few batches.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

P = TypeVar("P")
R = TypeVar("R")


Answered = Callable[[], Awaitable[None]]
"""Waits until every batch submitted before this one is answered (raising what that raised)."""


class FlushPipeline(Generic[P, R]):
    """Runs ``append(prepared, answered)`` in the table lane, then ``answer(result)`` in the
    answer lane and, meanwhile, ``housekeeping(result)`` in the table lane (neither when
    ``append`` returns None). ``append`` must await ``answered()`` before it commits, and only
    once its data files are written (the next append starts then): a commit's watermark covers
    every earlier entry, so every earlier batch must be acked and answered by then. Only one
    task drives the pipeline: ``submit`` and ``drain`` are never called concurrently."""

    def __init__(
        self,
        append: Callable[[P, Answered], Awaitable[R | None]],
        answer: Callable[[R], Awaitable[None]],
        housekeeping: Callable[[R], Awaitable[None]],
    ) -> None:
        self._append = append
        self._answer = answer
        self._housekeeping = housekeeping
        self._table_lane: asyncio.Task[None] | None = None
        self._written: asyncio.Future[None] | None = None
        """Set once the newest append has written its data files (it waits to commit)."""
        self._appending: set[asyncio.Task[None]] = set()
        self._failed: BaseException | None = None
        """What an append task raised after the next one started (its housekeeping's error)."""
        self._answer_lane: asyncio.Task[None] | None = None

    async def submit(self, prepared: P) -> None:
        """Start appending ``prepared`` once the table lane is free (waiting for it), and
        answer it after. Raises what an earlier stage raised."""
        await self._free_table_lane()
        loop = asyncio.get_running_loop()
        handoff: asyncio.Future[R | None] = loop.create_future()
        written: asyncio.Future[None] = loop.create_future()
        previous = self._answer_lane

        async def answered() -> None:
            if not written.done():
                written.set_result(None)  # its files are written: the next append may start
            if previous is not None:
                await asyncio.shield(previous)  # shielded: cancelling the append spares it

        lane = asyncio.create_task(
            self._table_work(prepared, answered, handoff), name="lancequeue-append"
        )
        self._table_lane, self._written = lane, written
        self._appending.add(lane)
        lane.add_done_callback(self._ended)
        self._answer_lane = asyncio.create_task(
            self._answer_work(handoff, self._answer_lane), name="lancequeue-answer"
        )

    async def drain(self) -> None:
        """Wait until every submitted batch is appended and answered. Raises what a stage
        raised."""
        await self._free_table_lane()
        for lane in list(self._appending):
            await lane
        if self._answer_lane is not None:
            lane, self._answer_lane = self._answer_lane, None
            await lane

    async def abandon(self) -> None:
        """Wait for the running stages to end, logging rather than raising their errors (the
        caller is already failing)."""
        for task in (*self._appending, self._table_lane, self._answer_lane):
            if task is None:
                continue
            try:
                await task
            except BaseException as exc:  # the caller's own error is the one that matters
                logger.debug("flush stage ended with %s: %s", type(exc).__name__, exc)
        self._table_lane = self._answer_lane = None

    def _ended(self, lane: asyncio.Task[None]) -> None:
        self._appending.discard(lane)
        if not lane.cancelled() and lane.exception() is not None and self._failed is None:
            self._failed = lane.exception()

    async def _free_table_lane(self) -> None:
        """Until the newest append has written its data files (or ended); raises what it
        raised."""
        if self._table_lane is not None:
            lane, written = self._table_lane, self._written
            assert written is not None
            await asyncio.wait([lane, written], return_when=asyncio.FIRST_COMPLETED)
            self._table_lane = self._written = None
            if lane.done():
                lane.result()  # raises an append's error promptly
        if self._failed is not None:
            raise self._failed
        answering = self._answer_lane
        if answering is not None and answering.done():
            self._answer_lane = None
            answering.result()  # raises an answer's error promptly

    async def _table_work(
        self, prepared: P, answered: Answered, handoff: asyncio.Future[R | None]
    ) -> None:
        try:
            result = await self._append(prepared, answered)
        except BaseException as exc:
            handoff.set_exception(exc)
            raise
        handoff.set_result(result)
        if result is not None:
            await self._housekeeping(result)

    async def _answer_work(
        self, handoff: asyncio.Future[R | None], previous: asyncio.Task[None] | None
    ) -> None:
        waits: list[asyncio.Future[object]] = [handoff]  # type: ignore[list-item]
        if previous is not None:
            waits.append(previous)  # type: ignore[arg-type]
        outcomes = await asyncio.gather(*waits, return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        result = outcomes[0]
        if result is not None:
            await self._answer(result)  # type: ignore[arg-type]
