"""``lancequeue redis start|stop|status --data-dir D``: the embedded server, managed by hand,
keeps what producers queued across a stop and a start."""

from __future__ import annotations

from pathlib import Path

import redis

from lancequeue.common import embedded_redis
from lancequeue.producer import Producer
from tests.support import queued_records, record, run_cli


def test_redis_start_status_and_stop_manage_the_embedded_server_and_its_data_survives(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    try:
        assert run_cli("redis", "status", "--data-dir", str(data_dir)).returncode == 1

        started = run_cli("redis", "start", "--data-dir", str(data_dir))
        assert started.returncode == 0, started.stderr
        url = started.stdout.strip()
        assert url == embedded_redis.url_for(data_dir) and url.startswith("unix://")
        status = run_cli("redis", "status", "--data-dir", str(data_dir))
        assert (status.returncode, f"running at {url}" in status.stdout) == (0, True)
        assert run_cli("redis", "start", "--data-dir", str(data_dir)).stdout.strip() == url

        with Producer("docs", data_dir=data_dir) as producer:  # no writer: records wait
            producer.enqueue_many([record(i) for i in range(3)])
            producer.close(timeout=0)

        stopped = run_cli("redis", "stop", "--data-dir", str(data_dir))
        assert stopped.returncode == 0, stopped.stderr
        assert not embedded_redis.is_running(data_dir)
        assert run_cli("redis", "stop", "--data-dir", str(data_dir)).returncode == 1

        assert run_cli("redis", "start", "--data-dir", str(data_dir)).returncode == 0
        with redis.Redis.from_url(url) as client:
            assert queued_records(client) == 3  # the AOF kept them
    finally:
        embedded_redis.stop(data_dir)
