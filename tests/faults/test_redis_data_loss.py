"""Redis loses its data (no persistence, killed, started again empty). The
writer must publish again what producers read (``max_queue_size`` above all): the stream never
holds more records than the writer's ``--max-queue-size``."""

from __future__ import annotations

import signal
import time

import pytest

from tests.faults.rig import MakeRig

pytestmark = pytest.mark.faults

MAX_QUEUE = 200
STALL_S = 3.0
"""How long the writer is stopped while producers fill the queue (about 300 records a second)."""
CHECK_EVERY_S = 0.05


def test_after_redis_lost_its_data_the_stream_never_holds_more_than_the_writers_max_queue_size(
    rig_for: MakeRig,
) -> None:
    rig = rig_for("redis lost its data", persistence=False)
    writer = rig.start_writer("--max-queue-size", str(MAX_QUEUE))
    rig.wait_serving(writer)
    rig.start_load(rate=100, timeout_s=5, grace_ms=1000, close_timeout_s=15)
    rig.wait_progress(150, "before Redis lost its data")
    rig.redis.kill()
    rig.redis.start()  # empty
    rig.rounds = 1
    rig.wait_progress(150, "after Redis lost its data")  # the writer has found the new Redis
    # The writer stalls: the producers fill the queue up to its bound, and no further.
    most = 0
    writer.signal(signal.SIGSTOP)
    try:
        checks = int(STALL_S / CHECK_EVERY_S)
        for _ in range(checks):
            most = max(most, rig.records_in_stream())
            time.sleep(CHECK_EVERY_S)  # the interval between checks, for the stall's length
    finally:
        writer.signal(signal.SIGCONT)
    print(f"at most {most} records in the stream over {checks} checks")
    rig.wait_progress(150, "after the stall")
    result = rig.conclude(writer)
    rig.assert_promises(result)
    assert most <= MAX_QUEUE, f"{most} records in a stream bounded at {MAX_QUEUE}: {result.row()}"
    assert most >= MAX_QUEUE // 2, f"the queue never filled ({most} records): {result.row()}"
