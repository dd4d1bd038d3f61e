"""``lancequeue demo``: one command runs Redis, a writer and producer processes, and shows a
summary and a vector search of the table they wrote."""

from __future__ import annotations

from pathlib import Path

import lancedb

from lancequeue.common import embedded_redis
from tests.support import run_cli


def test_the_demo_writes_every_record_finds_record_0_and_stops_only_a_server_it_started(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    try:
        done = run_cli(
            "demo", "--data-dir", str(data_dir), "--producers", "2", "--records", "150",
            "--dim", "8",
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        assert "records written        300 of 300" in done.stdout
        assert "table rows / version   300 / " in done.stdout
        assert "id      0  distance 0.0000" in done.stdout  # its own vector, found first
        assert _demo_rows(data_dir) == 300
        # it started the embedded server, so it stopped it: nothing outlives the demo
        assert not embedded_redis.is_running(data_dir)
        assert "server the demo started is stopped again" in done.stdout
        assert run_cli("redis", "start", "--data-dir", str(data_dir)).returncode == 0
        again = run_cli("demo", "--data-dir", str(data_dir), "--records", "25", "--dim", "8")
        assert again.returncode == 0, again.stdout + again.stderr
        assert _demo_rows(data_dir) == 100  # 4 producers x 25: it replaced the last demo's table
        assert embedded_redis.is_running(data_dir)  # running before the demo: left running
        assert "was running before the demo and keeps running" in again.stdout
    finally:
        embedded_redis.stop(data_dir)


def _demo_rows(data_dir: Path) -> int:
    return int(lancedb.connect(str(data_dir / "demo-db")).open_table("demo").count_rows())
