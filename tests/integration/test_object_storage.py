"""The writer's ``--db`` may be object storage: ``s3://`` against a local S3-compatible server
(moto in server mode), configured the way Lance reads it, from ``AWS_*`` environment
variables."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import lancedb
import pytest
import redis

from lancequeue.producer import Producer
from tests.support import WriterProcess, free_port, record, run_cli, wait_for, writer_alive

StartProcess = Callable[..., WriterProcess]
BUCKET = "lancequeue-tables"


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture
def s3_endpoint(tmp_path: Path) -> Iterator[str]:
    """A moto S3 server on a free port, with an empty bucket ``BUCKET``."""
    port = free_port()
    binary = shutil.which("moto_server", path=str(Path(sys.executable).parent))
    assert binary is not None, "moto[server] is a test dependency"
    with open(tmp_path / "moto.log", "wb") as log:
        server = subprocess.Popen(
            [binary, "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT
        )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(endpoint), 60, "the S3 server")
        create = urllib.request.Request(f"{endpoint}/{BUCKET}", method="PUT")
        with urllib.request.urlopen(create, timeout=10):
            pass
        yield endpoint
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)


def _s3_options(endpoint: str) -> dict[str, str]:
    """Lance storage options for the moto server at ``endpoint``."""
    return {
        "aws_endpoint": endpoint,
        "allow_http": "true",
        "aws_access_key_id": "test",
        "aws_secret_access_key": "test",
        "aws_region": "us-east-1",
    }


def test_batches_land_in_a_table_on_s3(
    writer_process: StartProcess,
    s3_endpoint: str,
    redis_url: str,
    client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key, value in _s3_options(s3_endpoint).items():
        # aws_endpoint → AWS_ENDPOINT, allow_http → AWS_ALLOW_HTTP, as Lance reads them
        name = "AWS_" + key.upper().removeprefix("AWS_")
        monkeypatch.setenv(name, value)  # for the writer process and for reading back here
    db = f"s3://{BUCKET}/db"
    writer = writer_process("--db", db, "--coalesce-ms", "20", "--max-batch", "32")
    wait_for(lambda: writer_alive(client), 60, "the writer")
    with Producer("docs", redis_url=redis_url) as producer:
        producer.write_many([record(i) for i in range(100)], timeout=60)
    table = lancedb.connect(db).open_table("docs")
    assert sorted(table.to_arrow().column("id").to_pylist()) == list(range(100))
    assert len(table.list_versions()) >= 1 + 2 + 4  # created, fenced, then at least 4 batches
    with urllib.request.urlopen(f"{s3_endpoint}/{BUCKET}?list-type=2&prefix=db/") as listing:
        keys = listing.read().decode()
    assert "db/docs.lance/data/" in keys and ".lance</Key>" in keys  # data files in the bucket
    writer.signal(signal.SIGTERM)
    assert writer.wait() == 0


def test_storage_options_on_the_command_line_reach_the_bucket_without_any_environment(
    writer_process: StartProcess,
    s3_endpoint: str,
    redis_url: str,
    client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)  # nothing for Lance to find but the options given
    options = _s3_options(s3_endpoint)
    db = f"s3://{BUCKET}/options"
    flags = [
        part for key, value in options.items() for part in ("--storage-option", f"{key}={value}")
    ]
    writer = writer_process("--db", db, "--coalesce-ms", "20", *flags)
    wait_for(lambda: writer_alive(client), 60, "the writer")
    with Producer("docs", redis_url=redis_url) as producer:
        producer.write_many([record(i) for i in range(50)], timeout=60)
    table = lancedb.connect(db, storage_options=options).open_table("docs")
    assert sorted(table.to_arrow().column("id").to_pylist()) == list(range(50))
    writer.signal(signal.SIGTERM)
    assert writer.wait() == 0


def test_a_storage_option_that_is_not_key_value_is_refused_by_name() -> None:
    refused = run_cli("writer", "--table", "docs", "--storage-option", "aws_endpoint")
    assert refused.returncode == 2
    assert "storage option 'aws_endpoint' is not KEY=VALUE" in refused.stderr
