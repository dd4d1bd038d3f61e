"""A hot standby started before its table existed (two writers started
together on an empty volume, as ``compose.yaml``'s ``standby`` profile does) takes over from a
writer that died. It must fence the table and read the newest watermark from the table as it is
then, whatever it saw at start-up."""

from __future__ import annotations

import signal
from pathlib import Path

import lance
import pytest

from lancequeue.writer.watermark import FENCE
from tests.faults.history import commits
from tests.faults.processes import WriterDaemon
from tests.faults.rig import TABLE, FaultRig, MakeRig
from tests.support import wait_for

pytestmark = pytest.mark.faults

FENCE_WAIT_S = 15.0
"""How long after taking over a writer may take to have its fence in the table."""


def _first_writer_then_standby(rig: FaultRig, crash_at: str) -> tuple[WriterDaemon, WriterDaemon]:
    """A writer (dying at ``crash_at``) holding the lease of a table that does not exist yet,
    and a standby waiting for it; neither has seen the table."""
    first = rig.start_writer(crash_at=crash_at)
    rig.wait_serving(first)
    standby = rig.start_writer()
    wait_for(
        lambda: not standby.running() or "standing by until its lease expires" in standby.log(),
        60,
        "the second writer to stand by",
    )
    assert standby.running(), standby.log_tail()
    return first, standby


def test_a_standby_started_before_the_table_existed_never_rewrites_what_its_predecessor_committed(
    rig_for: MakeRig,
) -> None:
    rig = rig_for("standby on a new table, kill after commit")
    first, standby = _first_writer_then_standby(rig, "after_commit")
    rig.start_load()
    code = rig.wait_exit(first)
    assert code == -signal.SIGKILL, f"exited {code}, not after its commit:\n{first.log_tail()}"
    rig.rounds = 1
    rig.wait_serving(standby)
    rig.wait_progress(100, "by the writer that took over")
    result = rig.conclude(standby)
    rig.assert_promises(result)
    assert not result.errors, result.row()


def test_a_standby_started_before_the_table_existed_fences_it_when_it_takes_over(
    rig_for: MakeRig,
) -> None:
    rig = rig_for("standby on a new table, fence")
    first, standby = _first_writer_then_standby(rig, "after_ack")
    # One send of ten records: the first writer's first batch, acked and answered before it
    # dies. Nothing is left for the standby to append.
    rig.start_load(1, max_records=10, chunk=10)
    code = rig.wait_exit(first)
    assert code == -signal.SIGKILL, f"exited {code}, not after its ack:\n{first.log_tail()}"
    rig.rounds = 1
    _, token = rig.wait_serving(standby)

    def fenced() -> bool:
        """The token is in the table's metadata, or on a commit of its history."""
        table = lance.dataset(str(Path(rig.db_uri) / f"{TABLE}.lance"))
        if int(table.metadata.get(FENCE, "0") or 0) >= token:
            return True
        return any(commit.fence == token for commit in commits(rig.db_uri, TABLE))

    try:
        wait_for(fenced, FENCE_WAIT_S, f"the table to carry the new writer's fence {token}")
    finally:
        result = rig.conclude(standby)
    rig.assert_promises(result)
    assert result.acknowledged == 10, result.row()
