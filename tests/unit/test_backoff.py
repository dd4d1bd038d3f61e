"""Reconnection backoff: full jitter under a doubling ceiling, so that producers that lost
Redis together do not reconnect at the same instants."""

from __future__ import annotations

from redis.exceptions import ConnectionError as RedisConnectionError

from lancequeue.common.backoff import Backoff
from lancequeue.producer.calls import Op
from tests.unit.test_core import Loop, core, enqueue, record


def _columns(count: int, tries: int) -> list[list[float]]:
    """The k-th delay of ``count`` fresh backoffs, for k in ``range(tries)``."""
    delays = [[backoff.next_delay() for _ in range(tries)] for backoff in _fresh(count)]
    return [[row[k] for row in delays] for k in range(tries)]


def _fresh(count: int) -> list[Backoff]:
    return [Backoff(initial_s=0.05, max_s=1.0) for _ in range(count)]


def test_each_delay_is_drawn_over_the_whole_range_below_a_doubling_capped_ceiling() -> None:
    for k, column in enumerate(_columns(300, 8)):
        ceiling = min(1.0, 0.05 * 2**k)
        assert all(0 <= delay <= ceiling for delay in column)
        # uniform over [0, ceiling]: 300 draws all above a fifth or below four fifths of it
        # has a chance under 1e-28
        assert min(column) < 0.2 * ceiling and max(column) > 0.8 * ceiling
        assert len(set(column)) == len(column)  # no two processes wait alike


def test_an_outage_of_any_length_keeps_drawing_under_the_cap() -> None:
    backoff = Backoff(initial_s=0.05, max_s=1.0)
    assert all(0 <= backoff.next_delay() <= 1.0 for _ in range(5000))  # no overflow


def test_after_a_success_the_ceiling_starts_again_from_the_first() -> None:
    backoffs = _fresh(300)
    for backoff in backoffs:
        for _ in range(6):
            backoff.next_delay()
        backoff.reset()
    assert all(backoff.next_delay() <= 0.05 for backoff in backoffs)


def test_producers_that_lose_redis_together_pause_for_different_times() -> None:
    pauses = []
    for _ in range(50):
        made = core()
        sender = Loop(made.sender())
        enqueue(made, [record(1)], 60)
        sender.answer()
        sender.connect()
        call = sender.fail_with(RedisConnectionError("lost"))
        assert call.op is Op.PAUSE
        pauses.append(call.args[0])
    assert len(set(pauses)) == len(pauses)
