"""SIGKILL of the serving writer at random moments, round after round."""

from __future__ import annotations

import time

from tests.faults.processes import WriterDaemon
from tests.faults.rig import FaultRig


def kill_at_random_moments(
    rig: FaultRig, writer: WriterDaemon, rounds: int, max_delay_s: float, *extra: str
) -> WriterDaemon:
    """``rounds`` times: once ``writer`` serves, SIGKILL it up to ``max_delay_s`` later (drawn
    from the rig's seeded RNG) and start another with ``extra``; returns the last one started."""
    for number in range(1, rounds + 1):
        rig.wait_serving(writer)
        delay_s = rig.rng.uniform(0.0, max_delay_s)
        print(f"round {number}: SIGKILL {writer.name} {delay_s:.3f}s after it took the lease")
        time.sleep(delay_s)  # the fault's random moment, not a wait for a condition
        assert writer.running(), writer.log_tail()
        writer.kill()
        rig.rounds += 1
        writer = rig.start_writer(*extra)
    return writer
