"""A writer paused past its lease "cannot commit again" once another writer
fenced the table, and that includes a compaction it was about to run. The writer stops itself
(``LANCEQUEUE_PAUSE_AT=compact``) right before its first compaction runs, a standby takes the
table over and fences it, and the paused writer is continued."""

from __future__ import annotations

import signal
from collections import Counter

import pytest

from tests.faults.check import table_rows
from tests.faults.history import commits
from tests.faults.rig import TABLE, MakeRig
from tests.support import wait_for

pytestmark = pytest.mark.faults

KEEP_HISTORY = ("--keep-versions", "1000000")
"""Every version kept: the table's history is what shows who committed when."""


def test_a_writer_paused_before_compacting_never_compacts_after_another_writer_fenced_the_table(
    rig_for: MakeRig,
) -> None:
    rig = rig_for("compaction paused past the lease")
    old = rig.start_writer(
        *KEEP_HISTORY, "--compact-every", "2", env={"LANCEQUEUE_PAUSE_AT": "compact"}
    )
    rig.wait_serving(old)
    rig.start_load()
    wait_for(lambda: old.stopped() or not old.running(), 60, "the writer to pause at compaction")
    assert old.running(), old.log_tail()
    try:
        # The standby opens the table as it is now, waits for the old lease to expire, fences
        # the table and serves; it never compacts, so any compaction after its fence is not its.
        standby = rig.start_writer(*KEEP_HISTORY, "--compact-every", "0")
        _, token = rig.wait_serving(standby)
        rig.wait_progress(100, "by the writer that took over")
        rig.stop_file.touch()
        for producer in rig.producers:
            producer.wait(60)
        wait_for(rig.stream_drained, 30, "the new writer to drain the stream")
        rows = Counter(table_rows(rig.db_uri, TABLE))
        history = commits(rig.db_uri, TABLE)
    finally:
        old.signal(signal.SIGCONT)
    rig.rounds = 1
    code = old.wait(60)
    after = commits(rig.db_uri, TABLE)
    # Nobody compacted before the pause and the new writer never compacts: a Rewrite in the
    # history can only be the paused writer's, committed after the new writer's fence.
    rewrites = [c for c in after if c.operation == "Rewrite"]
    late = [c for c in after if c.version > history[-1].version]
    fenced_at = min((c.version for c in after if c.fence == token), default=None)
    result = rig.conclude(standby)
    rig.assert_promises(result)
    assert not rewrites, (
        f"the paused writer compacted after the new writer's fence (v{fenced_at}): {rewrites}; "
        f"row {result.row()}"
    )
    assert not late, f"commits after the paused writer was continued: {late}"
    assert Counter(table_rows(rig.db_uri, TABLE)) == rows, "the rows changed"
    assert code == 1, f"the paused writer exited {code}:\n{old.log_tail()}"
