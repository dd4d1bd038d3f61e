"""``FlushPipeline`` on its own (no Redis, no table): commit order, answer order, and how far
the reader may run ahead of the commits and of the answers."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

import pytest

from lancequeue.writer.pipeline import FlushPipeline

pytestmark = pytest.mark.timeout(60)
HOUSEKEEPING_S = 0.01
"""How long the fake pipeline's housekeeping takes."""


@dataclass
class FakeBatch:
    number: int
    write_s: float = 0.0
    commit_s: float = 0.0
    answer_s: float = 0.0
    files: bool = True
    fail_write: bool = False
    fail_commit: bool = False


@dataclass
class Recorder:
    """What the fake stages did, in order; answers wait for ``hold`` while it is cleared."""

    events: list[tuple[str, int]] = field(default_factory=list)
    hold: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.hold.set()

    def at(self) -> dict[tuple[str, int], int]:
        return {event: index for index, event in enumerate(self.events)}


Pipeline = FlushPipeline[FakeBatch, FakeBatch, FakeBatch]


def fake_pipeline(recorder: Recorder) -> Pipeline:
    events = recorder.events

    async def write(batch: FakeBatch) -> FakeBatch:
        events.append(("write", batch.number))
        await asyncio.sleep(batch.write_s)
        if batch.fail_write:
            raise OSError(f"write {batch.number} failed")
        return batch

    async def commit(batch: FakeBatch) -> FakeBatch:
        if batch.files:
            events.append(("commit", batch.number))
            await asyncio.sleep(batch.commit_s)
            if batch.fail_commit:
                raise RuntimeError(f"commit {batch.number} failed")
        events.append(("appended", batch.number))
        return batch

    async def answer(batch: FakeBatch) -> None:
        events.append(("answer", batch.number))
        await recorder.hold.wait()
        await asyncio.sleep(batch.answer_s)
        events.append(("answered", batch.number))

    async def housekeeping(batch: FakeBatch) -> None:
        await asyncio.sleep(HOUSEKEEPING_S)  # the work it stands for takes this long

    return FlushPipeline(write, commit, answer, housekeeping)


async def submit(pipeline: Pipeline, recorder: Recorder, batch: FakeBatch) -> None:
    await pipeline.submit(batch)
    recorder.events.append(("submitted", batch.number))


def check_order(recorder: Recorder, numbers: list[int]) -> None:
    at = recorder.at()
    answered = [n for kind, n in recorder.events if kind == "answered"]
    assert answered == numbers  # every batch answered, in order
    commits = [n for kind, n in recorder.events if kind == "commit"]
    assert commits == sorted(commits)  # commits in submission order
    for n in numbers:
        assert at[("appended", n)] < at[("answer", n)]  # nothing answered before its append
        if ("commit", n) in at:  # ...and each commits after every one before it ended
            for earlier in numbers[: numbers.index(n)]:
                assert at[("appended", earlier)] < at[("commit", n)], (n, recorder.events)
        # The reader's bound: once a batch is handed over, the one before has written its
        # files and the one before that is answered; no third batch waits to commit.
        if n > 0:
            assert at[("write", n - 1)] < at[("submitted", n)]
        if n > 1:
            assert at[("answered", n - 2)] < at[("submitted", n)], (n, recorder.events)
            assert at[("appended", n - 2)] < at[("write", n)], (n, recorder.events)


async def test_commits_and_answers_keep_stream_order_and_the_reader_stays_two_ahead() -> None:
    rnd = random.Random(7)
    for _ in range(30):
        recorder = Recorder()
        pipeline = fake_pipeline(recorder)
        numbers = list(range(8))
        for n in numbers:
            await submit(
                pipeline,
                recorder,
                FakeBatch(
                    n,
                    write_s=rnd.choice([0, 0.001, 0.01]),
                    commit_s=rnd.choice([0, 0.001, 0.01]),
                    answer_s=rnd.choice([0, 0.001, 0.01]),
                    files=rnd.random() < 0.8,
                ),
            )
        await pipeline.drain()
        check_order(recorder, numbers)


async def test_a_long_backlog_of_fast_writes_and_slow_commits_never_piles_up_batches() -> None:
    """The writer reading a backlog faster than it commits: no more than one written batch
    ever waits for its turn to commit (each holds its rows in memory)."""
    recorder = Recorder()
    pipeline = fake_pipeline(recorder)
    for n in range(40):
        await submit(pipeline, recorder, FakeBatch(n, write_s=0, commit_s=0.002))
    await pipeline.drain()
    waiting = most = 0
    for kind, _ in recorder.events:
        waiting += {"write": 1, "appended": -1}.get(kind, 0)
        most = max(most, waiting)
    assert most <= 2  # one committing, one written and waiting (or writing)
    check_order(recorder, list(range(40)))


async def test_a_batch_commits_while_the_one_before_is_unanswered_and_the_reader_waits() -> None:
    recorder = Recorder()
    recorder.hold.clear()  # answers wait
    pipeline = fake_pipeline(recorder)
    await submit(pipeline, recorder, FakeBatch(0))
    await submit(pipeline, recorder, FakeBatch(1))
    third = asyncio.create_task(submit(pipeline, recorder, FakeBatch(2)))
    for _ in range(200):  # every stage is instant: whatever could run has run after this
        await asyncio.sleep(0)
    assert ("appended", 1) in recorder.events  # batch 1 committed although...
    assert ("answered", 0) not in recorder.events  # ...batch 0 is unanswered
    assert not third.done()  # ...but batch 2 waits for batch 0's answers
    assert ("write", 2) not in recorder.events
    recorder.hold.set()
    await third
    await pipeline.drain()
    check_order(recorder, [0, 1, 2])


async def test_a_failed_commit_stops_every_later_batch_before_its_commit() -> None:
    recorder = Recorder()
    pipeline = fake_pipeline(recorder)
    await pipeline.submit(FakeBatch(0))
    await pipeline.submit(FakeBatch(1, commit_s=0.05, fail_commit=True))
    with pytest.raises(RuntimeError, match="commit 1 failed"):
        await pipeline.submit(FakeBatch(2))  # writes its files while 1 commits
        await pipeline.submit(FakeBatch(3))
        await pipeline.drain()
    await pipeline.abandon()
    events = recorder.events
    assert ("commit", 2) not in events and ("commit", 3) not in events
    assert ("answered", 1) not in events and ("answered", 2) not in events


async def test_a_failed_write_is_raised_and_no_later_batch_is_appended() -> None:
    recorder = Recorder()
    pipeline = fake_pipeline(recorder)
    await pipeline.submit(FakeBatch(0, fail_write=True, write_s=0.01))
    with pytest.raises(OSError, match="write 0 failed"):
        await pipeline.submit(FakeBatch(1))
    await pipeline.abandon()
    assert ("write", 1) not in recorder.events
