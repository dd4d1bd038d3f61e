"""Fault 5: the table's storage failing for a while, then recovering. The process runs as root,
so permissions would not stop it: the data directory is replaced by a regular file."""

from __future__ import annotations

import re
import time

import pytest

from tests.faults.rig import TABLE, MakeRig
from tests.support import broken_storage, wait_for

pytestmark = pytest.mark.faults

OUTAGE_S = 2.0
RETRIES = ("--flush-retries", "6", "--retry-backoff-ms", "100")
"""Up to 6.3 s of retries: most batches outlast the outage."""
_FAILED_APPEND = re.compile(r"append of \d+ rows failed")


def test_a_storage_outage_is_ridden_out_and_records_answered_write_failed_are_absent(
    rig_for: MakeRig,
) -> None:
    rig = rig_for("storage outage")
    writer = rig.start_writer(*RETRIES)
    rig.wait_serving(writer)
    rig.start_load()  # after the writer: the outage hits a steady state, not a backlog
    rig.wait_progress(100, "before the outage")  # the table exists
    with broken_storage(rig.db_uri, TABLE):
        began = time.monotonic()
        wait_for(lambda: _FAILED_APPEND.search(writer.log()), 30, "an append to fail")
        remaining_s = OUTAGE_S - (time.monotonic() - began)
        if remaining_s > 0:
            time.sleep(remaining_s)  # the outage's length, not a wait for a condition
    rig.rounds = 1
    rig.wait_progress(100, "after the outage")
    result = rig.finish(writer)
    rig.assert_exactly_once(result)
    assert set(result.errors) <= {"WriteFailed"}, result.row()
