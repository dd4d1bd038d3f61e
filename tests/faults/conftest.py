"""The fault suite's marker, its per-test rig, and the closing summary of its rows."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.check import ROWS, format_row
from tests.faults.rig import FaultRig, MakeRig
from tests.lossy_proxy import LossyProxy
from tests.redis_server import RestartableRedis


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "faults: end-to-end fault injection (real processes, SIGKILL/SIGSTOP, Redis restarts, "
        "storage outages); deselect with -m 'not faults'",
    )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if ROWS:
        terminalreporter.section("fault suite: one row per test")
        for row in ROWS:
            terminalreporter.write_line(format_row(row))


@pytest.fixture
def rig_for(tmp_path: Path) -> Iterator[MakeRig]:
    """``rig_for(fault)``: a started ``FaultRig`` (its own redis-server) in the test's tmp dir;
    every process it started is killed at teardown."""
    made: list[FaultRig] = []

    def make(fault: str, *, persistence: bool = True) -> FaultRig:
        rig = FaultRig(tmp_path, fault, persistence)
        made.append(rig)
        return rig.start()

    yield make
    for rig in made:
        rig.close()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RestartableRedis]:
    server = RestartableRedis(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def proxy(redis_url: str) -> Iterator[LossyProxy]:
    made = LossyProxy(int(redis_url.rsplit(":", 1)[1].split("/")[0]))
    try:
        yield made
    finally:
        made.close()
