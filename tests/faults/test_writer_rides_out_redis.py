"""Every wait of the writer (start-up, lease acquisition, standing by,
serving) rides out a Redis that is down or restarting, as the producers do."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from tests.faults.rig import MakeRig
from tests.support import wait_for

pytestmark = pytest.mark.faults

LEASE = ("--lease-ms", "4000")
"""Longer than the restart: the active writer's lease outlives it, so the standby stays one."""
DOWN_S = 1.0
"""How long Redis stays down in each test (after what shows the writer met it down)."""


def test_a_standby_writer_rides_out_a_redis_restart_and_takes_over_when_the_active_one_dies(
    rig_for: MakeRig,
) -> None:
    rig = rig_for("redis restart under a standby")
    active = rig.start_writer(*LEASE)
    rig.wait_serving(active)
    standby = rig.start_writer(*LEASE)
    wait_for(
        lambda: not standby.running() or "standing by until its lease expires" in standby.log(),
        60,
        "the second writer to stand by",
    )
    rig.start_load()
    rig.wait_progress(100, "before the restart")
    rig.redis.stop()
    time.sleep(DOWN_S)  # how long Redis is down, not a wait for a condition
    rig.redis.start()
    rig.rounds = 1
    rig.wait_progress(100, "after the restart")
    assert rig.holds_lease(active), f"the active writer lost its lease:\n{active.log_tail()}"
    assert standby.running(), (
        f"the standby exited {standby.process.returncode} when Redis restarted:\n"
        f"{standby.log_tail()}"
    )
    active.kill()
    rig.wait_serving(standby)
    rig.wait_progress(100, "by the standby that took over")
    result = rig.conclude(standby)
    rig.assert_promises(result)
    assert not result.errors, result.row()


class _DownRedis:
    """A port where Redis is down: each connection is accepted and closed at once (counted, so
    the test knows the writer has tried), until ``close()``; then connections are refused."""

    def __init__(self, port: int) -> None:
        self.connections = 0
        self._closing = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", port))
        self._listener.settimeout(0.05)  # so that the loop sees close() promptly
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._closing.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            connection.close()
            self.connections += 1

    def close(self) -> None:
        self._closing.set()
        self._thread.join(10)
        self._listener.close()


def test_a_writer_started_while_redis_is_down_waits_for_it_and_then_serves(
    rig_for: MakeRig,
) -> None:
    rig = rig_for("writer started while redis is down")
    rig.redis.stop()
    down = _DownRedis(rig.redis.port)
    try:
        writer = rig.start_writer()
        # Its probe of the server, then its first command: the writer has met Redis down.
        wait_for(lambda: down.connections >= 2 or not writer.running(), 60, "the writer to try")
    finally:
        down.close()
    # Producers ride out Redis down too: they send once it is up.
    rig.start_load(timeout_s=10, grace_ms=1000, close_timeout_s=12)
    time.sleep(DOWN_S)  # how long Redis stays down (now refusing connections)
    survived = writer.running()
    rig.redis.start()
    rig.rounds = 1
    assert survived, (
        f"the writer exited {writer.process.returncode} while Redis was down:\n{writer.log_tail()}"
    )
    rig.wait_serving(writer)
    rig.wait_progress(100, "once Redis is up")
    rig.assert_promises(rig.conclude(writer))
