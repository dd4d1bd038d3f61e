"""Fault 4: the writer stopped (SIGSTOP) past its lease; a standby writer takes the table over;
the old one, continued (SIGCONT), must exit without committing anything more."""

from __future__ import annotations

import signal

import pytest

from tests.faults.history import commits
from tests.faults.rig import TABLE, MakeRig
from tests.support import wait_for

pytestmark = pytest.mark.faults


def test_a_writer_stalled_past_its_lease_is_replaced_and_never_commits_after_the_new_fence(
    rig_for: MakeRig,
) -> None:
    rig = rig_for("SIGSTOP past the lease")
    # Every version kept: the table's history is what shows who committed when.
    keep_history = ("--keep-versions", "1000000")
    old = rig.start_writer(*keep_history)
    old_consumer, old_token = rig.wait_serving(old)
    rig.start_load()  # after the writer: the stall hits a steady state, not a backlog
    standby = rig.start_writer(*keep_history)
    wait_for(
        lambda: "standing by until its lease expires" in standby.log(),
        60,
        "the second writer to stand by",
    )
    rig.wait_progress(150, "by the first writer")
    old.signal(signal.SIGSTOP)
    try:
        new_consumer, new_token = rig.wait_serving(standby)
        rig.wait_progress(150, "by the writer that took over")
    finally:
        old.signal(signal.SIGCONT)
    rig.rounds = 1
    code = old.wait(60)
    assert code == 1 and "another writer took table" in old.log(), old.log_tail()
    assert new_token > old_token

    result = rig.finish(standby)
    rig.assert_exactly_once(result)
    assert not result.errors, result.row()

    history = commits(rig.db_uri, TABLE)
    fenced_at = min(c.version for c in history if c.fence == new_token)
    old_commits = [c for c in history if c.fence == old_token or c.writer == old_consumer]
    assert any(c.version < fenced_at for c in old_commits), "the old writer committed nothing"
    late = [c for c in old_commits if c.version > fenced_at]
    assert not late, f"the old writer committed after the new fence (v{fenced_at}): {late}"
    # Every commit since the fence is the new writer's: its appends and fences carry its token;
    # compactions carry no properties (Lance's Rewrite takes none), and a writer checks the fence
    # before each.
    after = [c for c in history if c.version >= fenced_at and (c.fence, c.writer) != (None, None)]
    assert all(c.fence == new_token and c.writer == new_consumer for c in after), after
