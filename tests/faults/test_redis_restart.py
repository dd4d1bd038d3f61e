"""Fault 3: Redis stopped (SIGTERM) and started again on the same port and data in the middle of
the load; producers and the writer reconnect by themselves."""

from __future__ import annotations

import pytest

from tests.faults.rig import MakeRig

pytestmark = pytest.mark.faults

RESTARTS = 2


def test_producers_and_the_writer_ride_out_redis_restarts_and_nothing_is_lost_or_doubled(
    rig_for: MakeRig,
) -> None:
    rig = rig_for("redis restart")
    writer = rig.start_writer()
    rig.wait_serving(writer)
    rig.start_load()  # after the writer: the restarts hit a steady state, not a backlog
    for _ in range(RESTARTS):
        rig.wait_progress(150, "before the restart")
        rig.redis.restart()
        rig.rounds += 1
        rig.wait_progress(150, "after the restart")
    result = rig.finish(writer)  # the same writer process throughout: it must exit 0
    rig.assert_exactly_once(result)
    assert not result.errors, result.row()
