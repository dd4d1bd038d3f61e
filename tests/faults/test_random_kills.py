"""Fault 1: the writer SIGKILLed at random moments, again and again, under a steady load."""

from __future__ import annotations

import time

import pytest

from tests.faults.rig import MakeRig

pytestmark = pytest.mark.faults

ROUNDS = 10
MAX_DELAY_S = 1.5
"""A kill comes up to this long after the writer took the lease (drawn from the seeded RNG)."""


@pytest.mark.timeout(240)
def test_a_writer_killed_at_random_moments_ten_times_loses_and_duplicates_nothing(
    rig_for: MakeRig,
) -> None:
    rig = rig_for("kill -9 at random moments")
    rig.start_load()
    writer = rig.start_writer()
    for number in range(1, ROUNDS + 1):
        rig.wait_serving(writer)
        delay_s = rig.rng.uniform(0.0, MAX_DELAY_S)
        print(f"round {number}: SIGKILL {writer.name} {delay_s:.3f}s after it took the lease")
        time.sleep(delay_s)  # the fault's random moment, not a wait for a condition
        assert writer.running(), writer.log_tail()
        writer.kill()
        rig.rounds += 1
        writer = rig.start_writer()
    rig.wait_serving(writer)
    rig.wait_progress(100, "by the last writer")
    rig.assert_exactly_once(rig.finish(writer))
