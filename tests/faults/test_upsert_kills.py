"""Upserts through repeated SIGKILLs of the writer: several producer processes upsert
overlapping keys round after round while the writer is killed at random moments and restarted;
at the end the table holds exactly one row per key, each with the value sent last."""

from __future__ import annotations

import sys

import lancedb
import pytest

from tests.faults.kills import kill_at_random_moments
from tests.faults.processes import LoggedProcess, clean_env
from tests.faults.rig import MakeRig
from tests.faults.upsert_load import own_keys

pytestmark = pytest.mark.faults

PRODUCERS = 3
ROUNDS = 12
SHARED_KEYS = 40
OWN_KEYS = 20
KILLS = 5
MAX_DELAY_S = 1.5


@pytest.mark.timeout(300)
def test_upserts_of_overlapping_keys_through_kill_9_leave_one_row_per_key_with_the_last_value(
    rig_for: MakeRig,
) -> None:
    rig = rig_for("upserts, kill -9 at random moments")
    key = ("--upsert-key", "key")
    writer = rig.start_writer(*key)
    rig.wait_serving(writer)
    producers = [
        LoggedProcess(
            f"upserter-{index}",
            [
                sys.executable,
                "-m",
                "tests.faults.upsert_load",
                *("--redis", rig.redis.url, "--producer", str(index)),
                *("--rounds", str(ROUNDS), "--shared", str(SHARED_KEYS), "--own", str(OWN_KEYS)),
            ],
            rig.directory / f"upserter-{index}.log",
            clean_env(),
        )
        for index in range(PRODUCERS)
    ]
    try:
        writer = kill_at_random_moments(rig, writer, KILLS, MAX_DELAY_S, *key)
        for producer in producers:
            code = producer.wait(240)
            assert code == 0, f"{producer.name} exited {code}:\n{producer.log_tail()}"
    finally:
        for producer in producers:
            producer.close()
    rows = lancedb.connect(rig.db_uri).open_table("docs").to_arrow().to_pylist()
    keys = [row["key"] for row in rows]
    expected = [*range(SHARED_KEYS)]
    for index in range(PRODUCERS):
        expected += own_keys(index, OWN_KEYS)
    assert sorted(keys) == sorted(expected), "not exactly one row per key"
    stale = [row for row in rows if row["n"] != ROUNDS - 1]
    assert not stale, f"rows without the value sent last: {stale[:5]}"
    for row in rows:
        if row["key"] >= SHARED_KEYS:  # a producer's own key holds its own value
            assert row["key"] in own_keys(row["producer"], OWN_KEYS), row
    assert writer.running(), writer.log_tail()
