"""compose.yaml cannot drift from the CLI: each lancequeue service's command line, as the image
would run it, runs here against the test's Redis, and the records land.

Docker may be missing where tests run, so the image's paths are mapped to this checkout (its
``/app``) and a temporary directory (its ``/data``), and the Redis URL to the test's server.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import lancedb
import redis
import yaml

from tests.support import CLI, cli_env, wait_for, writer_alive

ROOT = Path(__file__).parents[2]
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]


def _image_entrypoint() -> list[str]:
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("ENTRYPOINT "):
            return list(json.loads(line.removeprefix("ENTRYPOINT ")))
    raise AssertionError("the Dockerfile has no ENTRYPOINT")


def _local_command(service: dict[str, Any], data_dir: Path) -> list[str]:
    """The service's command line, with the image's programs and paths mapped to this host."""
    argv = [*(service.get("entrypoint") or _image_entrypoint()), *service["command"]]
    local: list[str] = []
    for index, arg in enumerate(argv):
        if index == 0 and arg == "lancequeue":
            local.extend(CLI)
        elif index == 0 and arg == "python":
            local.append(sys.executable)
        elif arg.startswith("/app/"):
            local.append(str(ROOT / arg.removeprefix("/app/")))
        elif arg.startswith("/data/"):
            local.append(str(data_dir / arg.removeprefix("/data/")))
        else:
            local.append(arg)
    return local


def _local_env(service: dict[str, Any], redis_url: str) -> dict[str, str]:
    env = dict(service.get("environment") or {})
    assert env.get("LANCEQUEUE_REDIS", "").startswith("redis://redis:6379")
    env["LANCEQUEUE_REDIS"] = redis_url  # the compose network's "redis" is the test's server
    return cli_env(**env)


def test_the_compose_file_wires_redis_the_writer_and_three_producers() -> None:
    redis_service = SERVICES["redis"]
    assert "--appendonly" in redis_service["command"] and "healthcheck" in redis_service
    assert int(str(redis_service["image"]).split(":")[1]) >= 7
    writer = SERVICES["writer"]
    assert writer["depends_on"]["redis"]["condition"] == "service_healthy"
    assert any(str(volume).endswith(":/data") for volume in writer["volumes"])
    assert SERVICES["producer"]["deploy"]["replicas"] == 3


def test_each_service_s_command_line_runs_here_and_the_producers_records_land(
    redis_url: str, client: redis.Redis, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    writer_service, producer_service = SERVICES["writer"], SERVICES["producer"]
    with open(tmp_path / "writer.log", "wb") as log:
        writer = subprocess.Popen(
            _local_command(writer_service, data_dir),
            env=_local_env(writer_service, redis_url),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        standby_service = SERVICES["writer-standby"]
        standby = subprocess.Popen(
            _local_command(standby_service, data_dir),
            env=_local_env(standby_service, redis_url),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for(lambda: writer_alive(client), 60, "the compose writer")
            replicas = producer_service["deploy"]["replicas"]
            producers = [
                subprocess.Popen(
                    _local_command(producer_service, data_dir),
                    env=_local_env(producer_service, redis_url),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
                for _ in range(replicas)
            ]
            for producer in producers:
                output, _ = producer.communicate(timeout=300)
                assert producer.returncode == 0, output
                assert "records written" in output
            count = int(
                producer_service["command"][producer_service["command"].index("--count") + 1]
            )
            table = lancedb.connect(str(data_dir / "db")).open_table("docs")
            ids = table.to_arrow().column("id").to_pylist()
            assert len(ids) == len(set(ids)) == replicas * count  # each replica its own ids
            assert standby.poll() is None  # waiting for the lease all along
        finally:
            for process in (writer, standby):
                process.send_signal(signal.SIGTERM)
            assert writer.wait(60) == 0 and standby.wait(60) == 0
