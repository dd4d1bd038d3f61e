"""The sync producer's futures: made without a lock, one made only when a thread waits; every
way of waiting still wakes when the future is settled, from another thread."""

from __future__ import annotations

import concurrent.futures
import contextlib
import random
import threading

import pytest

from lancequeue.producer.futures import RecordFuture


def test_every_way_of_waiting_wakes_as_another_thread_settles_the_futures() -> None:
    futures = [RecordFuture() for _ in range(5_000)]
    assert not futures[0].cancel() and futures[0].running()
    finished: list[int] = []

    def wait_on_some(seed: int) -> None:
        chosen = random.Random(seed)
        for _ in range(1_000):
            index = chosen.randrange(len(futures))
            future = futures[index]
            way = chosen.randrange(4)
            if way == 0:
                with pytest.raises(ValueError) if index % 3 == 0 else contextlib.nullcontext():
                    future.result(timeout=10)
            elif way == 1:
                future.exception(timeout=10)
            elif way == 2:
                done, _ = concurrent.futures.wait([future], timeout=10)
                assert done
            else:
                called = threading.Event()
                future.add_done_callback(lambda _, called=called: called.set())
                assert called.wait(10)
        finished.append(seed)

    waiters = [threading.Thread(target=wait_on_some, args=(seed,)) for seed in range(4)]
    for waiter in waiters:
        waiter.start()
    for position, future in enumerate(futures):  # some waited on already, most not
        if position % 3 == 0:
            future.set_exception(ValueError(position))
        else:
            future.set_result(None)
    for waiter in waiters:
        waiter.join(30)
    assert sorted(finished) == [0, 1, 2, 3]
    with pytest.raises(concurrent.futures.InvalidStateError):
        futures[1].set_result(None)
    assert len(list(concurrent.futures.as_completed(futures[:100], timeout=5))) == 100


def test_each_done_callback_runs_once_however_it_races_the_settling() -> None:
    """Callbacks are added without a condition: one added as another thread settles the
    future runs exactly once, by the settling thread or at once by the adder."""
    futures = [RecordFuture() for _ in range(20_000)]
    calls = [0] * len(futures)
    lock = threading.Lock()

    def count(position: int, future: concurrent.futures.Future[object]) -> None:
        assert future.done()
        with lock:
            calls[position] += 1

    def add_callbacks() -> None:
        for position, future in enumerate(futures):
            future.add_done_callback(lambda done, position=position: count(position, done))

    adder = threading.Thread(target=add_callbacks)
    adder.start()
    for position, future in enumerate(futures):  # racing the adder: before, during, after
        if position % 2:
            future.set_result(None)
        else:
            future.set_exception(ValueError(position))
    adder.join(30)
    assert calls == [1] * len(futures)
    assert all("_condition" not in future.__dict__ for future in futures)
