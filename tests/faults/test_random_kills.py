"""Fault 1: the writer SIGKILLed at random moments, again and again, under a steady load."""

from __future__ import annotations

import pytest

from tests.faults.kills import kill_at_random_moments
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
    writer = kill_at_random_moments(rig, rig.start_writer(), ROUNDS, MAX_DELAY_S)
    rig.wait_serving(writer)
    rig.wait_progress(100, "by the last writer")
    rig.assert_exactly_once(rig.finish(writer))
