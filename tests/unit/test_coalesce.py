"""The coalescing rule on its own, with a clock the tests move."""

from __future__ import annotations

from lancequeue.writer.coalesce import Coalescer


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_an_empty_batch_is_never_due_and_reads_block_for_the_idle_time() -> None:
    coalescer: Coalescer[int] = Coalescer(100, 10, 250, Clock())
    assert not coalescer.due()
    assert coalescer.block_ms() == 250
    assert coalescer.room == 10


def test_window_flush_comes_coalesce_ms_after_the_first_record() -> None:
    clock = Clock()
    coalescer: Coalescer[int] = Coalescer(100, 10, 250, clock)
    coalescer.add([1])
    clock.now += 0.06
    coalescer.add([2, 3])  # later records do not extend the window
    assert not coalescer.due()
    assert coalescer.block_ms() == 40
    clock.now += 0.04
    assert coalescer.due()
    assert coalescer.take() == [1, 2, 3]
    assert not coalescer.due() and len(coalescer) == 0


def test_size_flush_comes_as_soon_as_max_batch_records_are_in_hand() -> None:
    clock = Clock()
    coalescer: Coalescer[int] = Coalescer(10_000, 3, 250, clock)
    coalescer.add([1, 2])
    assert coalescer.room == 1 and not coalescer.due()
    coalescer.add([3])
    assert coalescer.due() and coalescer.room == 0


def test_reads_never_block_longer_than_max_block_ms_even_in_a_long_window() -> None:
    coalescer: Coalescer[int] = Coalescer(600_000, 10, 250, Clock())
    coalescer.add([1])
    assert coalescer.block_ms() == 250


def test_a_new_batch_starts_a_new_window() -> None:
    clock = Clock()
    coalescer: Coalescer[int] = Coalescer(100, 10, 250, clock)
    coalescer.add([1])
    clock.now += 0.5
    coalescer.take()
    coalescer.add([2])
    assert not coalescer.due()
    assert coalescer.block_ms() == 100


def test_block_time_is_at_least_one_millisecond_while_a_batch_is_open() -> None:
    clock = Clock()
    coalescer: Coalescer[int] = Coalescer(100, 10, 250, clock)
    coalescer.add([1])
    clock.now += 0.0999999
    assert coalescer.block_ms() == 1


def test_a_batch_counts_the_records_its_entries_carry() -> None:
    coalescer: Coalescer[int] = Coalescer(10_000, 10, 250, Clock(), count=lambda entry: entry)
    coalescer.add([4])
    assert len(coalescer) == 4 and not coalescer.due()
    assert coalescer.room == 1  # 6 records of room, about 4 per entry
    coalescer.add([4, 4])
    assert coalescer.due()
    assert coalescer.take() == [4, 4]  # 8 records; the third entry would make 12
    assert len(coalescer) == 4 and coalescer.take() == [4]


def test_an_entry_larger_than_max_batch_makes_a_batch_of_its_own() -> None:
    coalescer: Coalescer[int] = Coalescer(10_000, 10, 250, Clock(), count=lambda entry: entry)
    coalescer.add([30, 1])
    assert coalescer.take() == [30]
    assert coalescer.take() == [1]


def test_records_that_waited_in_the_stream_are_flushed_without_waiting_out_the_window() -> None:
    clock = Clock()
    coalescer: Coalescer[int] = Coalescer(100, 10, 250, clock)
    coalescer.add([1, 2], waited_s=0.5)  # a backlog: they arrived while the writer was busy
    assert coalescer.due()
    coalescer.take()
    coalescer.add([3], waited_s=0.03)
    assert not coalescer.due() and coalescer.block_ms() == 70


def test_max_bytes_bounds_what_one_batch_takes() -> None:
    coalescer: Coalescer[int] = Coalescer(
        10_000, 100, 250, Clock(), max_bytes=10, size=lambda entry: entry
    )
    coalescer.add([4, 4, 4])
    assert coalescer.due()
    assert coalescer.take() == [4, 4]
    assert coalescer.take() == [4]
