"""``WriteTimeout`` means "not written, and never will be". A commit or an
answer delayed past the record's deadline plus ``answer_grace_ms`` must not turn into a
``WriteTimeout`` for a record that is, or later will be, in the table: under a stalled Redis, a
slow ``--on-flushed`` hook, and a failing disk.

Records here have a short timeout and a small grace, so each delay outlasts both. Every check is
made at the very end, once the stream is drained and the writer stopped."""

from __future__ import annotations

import time

import pytest

from tests.faults.hooks import GO_ENV, MARKER_ENV, SLEEP_ENV
from tests.faults.rig import MakeRig
from tests.support import wait_for

pytestmark = pytest.mark.faults

TIMEOUT_S = 3.0
GRACE_MS = 1000
STALL_S = 8.0
"""How long Redis stays stopped: past every held record's deadline plus grace, and past the
producers' socket timeout (``redis_timeout_ms`` 5 s, plus 1 s for the reply listener)."""
HOOK_S = 6.0
OUTAGE_S = 5.0
RETRIES = ("--flush-retries", "8", "--retry-backoff-ms", "100")
"""Up to 25.5 s of retries: every batch outlasts the outage, and commits after it."""


def test_records_answered_write_timeout_while_redis_stalled_after_their_commit_are_not_in_the_table(
    rig_for: MakeRig,
) -> None:
    rig = rig_for("redis stalled after a commit")
    marker, go = rig.directory / "flush-held", rig.directory / "go"
    writer = rig.start_writer(
        "--on-flushed",
        "tests.faults.hooks:hold_first_flush",
        env={MARKER_ENV: str(marker), GO_ENV: str(go)},
    )
    rig.wait_serving(writer)
    rig.start_load(timeout_s=TIMEOUT_S, grace_ms=GRACE_MS, close_timeout_s=20)
    # The first batch is committed and not yet acked: stall Redis right then.
    wait_for(marker.exists, 60, "the first batch to be committed")
    rig.redis.freeze()
    try:
        go.touch()
        time.sleep(STALL_S)  # the stall's length, not a wait for a condition
    finally:
        rig.redis.thaw()
    rig.rounds = 1
    rig.wait_progress(100, "after the stall")
    rig.assert_promises(rig.conclude(writer))


def test_records_answered_write_timeout_while_a_slow_on_flushed_hook_ran_are_not_in_the_table(
    rig_for: MakeRig,
) -> None:
    rig = rig_for("slow on_flushed hook")
    writer = rig.start_writer(
        "--on-flushed", "tests.faults.hooks:slow_first_flush", env={SLEEP_ENV: str(HOOK_S)}
    )
    rig.wait_serving(writer)
    rig.start_load(timeout_s=TIMEOUT_S, grace_ms=GRACE_MS, close_timeout_s=20)
    rig.rounds = 1
    rig.wait_progress(100, "after the slow hook")
    rig.assert_promises(rig.conclude(writer))


def test_records_answered_write_timeout_while_a_failing_disk_was_retried_are_not_in_the_table(
    rig_for: MakeRig,
) -> None:
    rig = rig_for("failing disk, 8 retries")
    writer = rig.start_writer(*RETRIES)
    rig.wait_serving(writer)
    rig.start_load(timeout_s=2.0, grace_ms=GRACE_MS, close_timeout_s=40)
    rig.wait_progress(100, "before the outage")  # the table exists
    rig.storage_outage(writer, OUTAGE_S)
    rig.rounds = 1
    rig.wait_progress(100, "after the outage")
    rig.assert_promises(rig.conclude(writer))
