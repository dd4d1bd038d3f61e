"""Fault 2: the writer SIGKILLs itself at each precise step of a flush in turn
(``LANCEQUEUE_CRASH_AT``); each is restarted with the next crash point, the last one without
the hook, and that one finishes the job."""

from __future__ import annotations

import signal

import pytest

from tests.faults.rig import MakeRig

pytestmark = pytest.mark.faults

CRASHES: list[tuple[str, tuple[str, ...]]] = [
    ("mid_append:3", ()),
    ("after_commit:3", ()),
    ("after_ack:3", ()),
    ("after_compact:2", ("--compact-every", "2")),
]
"""Each writer dies the n-th time it reaches its point (``after_compact``: at its 2nd compaction,
which comes every 2nd flush)."""


def test_a_writer_killed_at_each_precise_step_of_a_flush_loses_and_duplicates_nothing(
    rig_for: MakeRig,
) -> None:
    rig = rig_for("crash at each point")
    rig.start_load()
    for crash_at, options in CRASHES:
        doomed = rig.start_writer(*options, crash_at=crash_at)
        rig.wait_serving(doomed)
        code = rig.wait_exit(doomed)
        assert code == -signal.SIGKILL, f"exited {code}, not at {crash_at}:\n{doomed.log_tail()}"
        print(f"{doomed.name} died at {crash_at}")
        rig.rounds += 1
    writer = rig.start_writer()
    rig.wait_serving(writer)
    rig.wait_progress(100, "after the last restart")
    result = rig.finish(writer)
    rig.assert_exactly_once(result)
    assert not result.errors, result.row()
    # The writer that died after_commit left its last batch in the table but not acked: the
    # next one answered it from the table's watermark instead of writing it again.
    after_commit = [crash_at for crash_at, _ in CRASHES].index("after_commit:3")
    settled = rig.writers[after_commit + 1]
    assert "pending entries are in the table already" in settled.log(), settled.log_tail()
