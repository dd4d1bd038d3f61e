"""Overlapping a flush's stages: while one batch is committed, the next one's data files are
written, the one after is read and built, and the one before is answered.

Two lanes, each strictly ordered:

* the table lane runs appends in the order they were submitted. An append writes its data
  files (``write``), then waits until every append before it has returned, then commits
  (``commit``): the next append may write its files meanwhile, but commits follow one another
  in submission order, the single-writer commit order the watermark relies on;
* the answer lane runs each batch's answers after its own append returned and after the
  answers of the batch before it: nothing is answered before its commit, and producers hear
  about batches in stream order.

A commit does not wait for the answers of the batch before it: its watermark lists that
batch's answers too while they are not given (``BatchSettler``), so a crash between the two
loses none of them.

``submit`` returns once the append before has written its data files and the batch before that
is answered: the caller (the reader) then holds at most three batches past the answered ones
(one committing, one writing its files, the one it prepares next), so memory stays bounded by a
few batches however long the backlog, and at most one committed batch is unanswered when the
next one commits.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

P = TypeVar("P")
W = TypeVar("W")
R = TypeVar("R")


class FlushPipeline(Generic[P, W, R]):
    """Runs ``write(prepared)`` then, once every append before it has returned,
    ``commit(written)`` in the table lane; then ``answer(result)`` in the answer lane and,
    meanwhile, ``housekeeping(result)`` in the table lane (neither when ``commit`` returns
    None). The next batch's ``write`` starts once this one's returned. Data flows one way:
    each stage gets what the one before returned. Only one task drives the pipeline:
    ``submit`` and ``drain`` are never called concurrently."""

    def __init__(
        self,
        write: Callable[[P], Awaitable[W]],
        commit: Callable[[W], Awaitable[R | None]],
        answer: Callable[[R], Awaitable[None]],
        housekeeping: Callable[[R], Awaitable[None]],
    ) -> None:
        self._write = write
        self._commit = commit
        self._answer = answer
        self._housekeeping = housekeeping
        self._table_lane: asyncio.Task[None] | None = None
        self._written: asyncio.Future[None] | None = None
        """Set once the newest append has written its data files (it waits for its turn)."""
        self._appended: asyncio.Future[R | None] | None = None
        """The newest append's outcome: the next one's turn comes once it is set."""
        self._appending: set[asyncio.Task[None]] = set()
        self._failed: BaseException | None = None
        """What an append task raised after the next one started (its housekeeping's error)."""
        self._answer_lanes: list[asyncio.Task[None]] = []
        """The answer lanes of the newest batches, oldest first (at most two kept)."""

    async def submit(self, prepared: P) -> None:
        """Start appending ``prepared`` once the append before it has written its data files
        and the batch before that is answered (waiting for both), and answer it after. Raises
        what an earlier stage raised."""
        await self._make_room()
        loop = asyncio.get_running_loop()
        appended: asyncio.Future[R | None] = loop.create_future()
        written: asyncio.Future[None] = loop.create_future()
        lane = asyncio.create_task(
            self._table_work(prepared, written, self._appended, appended), name="lancequeue-append"
        )
        self._table_lane, self._written, self._appended = lane, written, appended
        self._appending.add(lane)
        lane.add_done_callback(self._ended)
        before = self._answer_lanes[-1] if self._answer_lanes else None
        self._answer_lanes.append(
            asyncio.create_task(self._answer_work(appended, before), name="lancequeue-answer")
        )

    async def drain(self) -> None:
        """Wait until every submitted batch is appended and answered. Raises what a stage
        raised."""
        await self._make_room()
        for lane in list(self._appending):
            await lane
        lanes, self._answer_lanes = self._answer_lanes, []
        for answering in lanes:
            await answering

    async def abandon(self) -> None:
        """Wait for the running stages to end, logging rather than raising their errors (the
        caller is already failing)."""
        for task in (*self._appending, self._table_lane, *self._answer_lanes):
            if task is None:
                continue
            try:
                await task
            except BaseException as exc:  # the caller's own error is the one that matters
                logger.debug("flush stage ended with %s: %s", type(exc).__name__, exc)
        self._table_lane = None
        self._answer_lanes = []

    def _ended(self, lane: asyncio.Task[None]) -> None:
        self._appending.discard(lane)
        if not lane.cancelled() and lane.exception() is not None and self._failed is None:
            self._failed = lane.exception()

    async def _make_room(self) -> None:
        """Until the newest append has written its data files (or ended) and the batch before
        it is answered; raises what an earlier stage raised."""
        if self._table_lane is not None:
            lane, written = self._table_lane, self._written
            assert written is not None
            await asyncio.wait([lane, written], return_when=asyncio.FIRST_COMPLETED)
            self._table_lane = self._written = None
            if lane.done():
                lane.result()  # raises an append's error promptly
        if self._failed is not None:
            raise self._failed
        while len(self._answer_lanes) > 1:  # all but the newest batch's answers
            await self._answer_lanes.pop(0)  # raises an answer's error
        if self._answer_lanes and self._answer_lanes[-1].done():
            self._answer_lanes.pop().result()  # raises an answer's error promptly

    async def _table_work(
        self,
        prepared: P,
        written: asyncio.Future[None],
        previous: asyncio.Future[R | None] | None,
        appended: asyncio.Future[R | None],
    ) -> None:
        try:
            files = await self._write(prepared)
            written.set_result(None)  # its files are written: the next append may start
            if previous is not None:
                await asyncio.shield(previous)  # shielded: cancelling the append spares it
            result = await self._commit(files)
        except BaseException as exc:
            appended.set_exception(exc)
            raise
        appended.set_result(result)
        if result is not None:
            await self._housekeeping(result)

    async def _answer_work(
        self, appended: asyncio.Future[R | None], previous: asyncio.Task[None] | None
    ) -> None:
        waits: list[asyncio.Future[object]] = [appended]  # type: ignore[list-item]
        if previous is not None:
            waits.append(previous)  # type: ignore[arg-type]
        outcomes = await asyncio.gather(*waits, return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        result = outcomes[0]
        if result is not None:
            await self._answer(result)  # type: ignore[arg-type]
