"""``lancequeue demo``: one command runs Redis, a writer and producer processes, and shows a
summary and a vector search of the table they wrote."""

from __future__ import annotations

from pathlib import Path

import lancedb

from lancequeue.common import embedded_redis
from tests.support import run_cli


def test_the_demo_writes_every_record_and_finds_record_0_by_its_vector(tmp_path: Path) -> None:
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
        again = run_cli("demo", "--data-dir", str(data_dir), "--records", "25", "--dim", "8")
        assert again.returncode == 0, again.stdout + again.stderr
        assert _demo_rows(data_dir) == 100  # 4 producers x 25: it replaced the last demo's table
    finally:
        embedded_redis.stop(data_dir)


def _demo_rows(data_dir: Path) -> int:
    return int(lancedb.connect(str(data_dir / "demo-db")).open_table("demo").count_rows())
