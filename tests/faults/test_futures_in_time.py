"""Every future resolves by its deadline plus ``answer_grace_ms`` (plus a small
slack, ``LATE_SLACK_S``), even while Redis hangs. With no writer at all, no record can be
answered by one: each must fail in time, with ``WriteTimeout`` (not written, never will be) or
``OutcomeUnknown`` (Redis could not be asked in time)."""

from __future__ import annotations

import time

import pytest

from tests.faults.rig import MakeRig
from tests.support import wait_for

pytestmark = pytest.mark.faults

TIMEOUT_S = 2.0
GRACE_MS = 1000
FREEZE_S = 10.0
"""How long Redis stays stopped (SIGSTOP): far past every record's deadline plus grace."""


def test_every_future_resolves_by_its_deadline_plus_grace_while_redis_hangs_and_no_writer_runs(
    rig_for: MakeRig,
) -> None:
    rig = rig_for("redis frozen, no writer")
    rig.start_load(timeout_s=TIMEOUT_S, grace_ms=GRACE_MS, close_timeout_s=5)
    # Some records answered (in time) already, more waiting in the stream, more being sent.
    wait_for(lambda: rig.outcomes() >= 100, 30, "the first records to time out")
    rig.redis.freeze()
    try:
        time.sleep(FREEZE_S)  # how long Redis hangs, not a wait for a condition
    finally:
        rig.redis.thaw()
    rig.rounds = 1
    result = rig.conclude(None)
    print(
        f"WriteTimeout {result.errors.get('WriteTimeout', 0)}, "
        f"OutcomeUnknown {result.errors.get('OutcomeUnknown', 0)}, late {result.late}, "
        f"the latest {result.latest_s}s after its deadline plus grace"
    )
    rig.assert_promises(result, late_allowed=frozenset())
    assert set(result.errors) <= {"WriteTimeout", "OutcomeUnknown"}, result.row()
    assert result.in_table == 0 and result.acknowledged == 0, result.row()
