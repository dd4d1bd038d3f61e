"""Fault 5: the table's storage failing for a while, then recovering. The process runs as root,
so permissions would not stop it: the data directory is replaced by a regular file."""

from __future__ import annotations

import pytest

from tests.faults.rig import MakeRig

pytestmark = pytest.mark.faults

OUTAGE_S = 2.0
RETRIES = ("--flush-retries", "6", "--retry-backoff-ms", "100")
"""Up to 6.3 s of retries: most batches outlast the outage."""


def test_a_storage_outage_is_ridden_out_and_records_answered_write_failed_are_absent(
    rig_for: MakeRig,
) -> None:
    rig = rig_for("storage outage")
    writer = rig.start_writer(*RETRIES)
    rig.wait_serving(writer)
    rig.start_load()  # after the writer: the outage hits a steady state, not a backlog
    rig.wait_progress(100, "before the outage")  # the table exists
    rig.storage_outage(writer, OUTAGE_S)
    rig.rounds = 1
    rig.wait_progress(100, "after the outage")
    result = rig.finish(writer)
    rig.assert_exactly_once(result)
    assert set(result.errors) <= {"WriteFailed"}, result.row()
