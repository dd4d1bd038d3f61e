"""``lancequeue writer`` imports ``--schema``, ``--on-flushed`` and ``--import`` modules from the
current directory, as uvicorn and rq do, with nothing on ``PYTHONPATH``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import lancedb
import pyarrow as pa

from lancequeue.producer import Producer
from tests.support import WriterProcess, cli_env

CONSOLE_SCRIPT = Path(sys.executable).parent / "lancequeue"

SCHEMAS = """
import pyarrow as pa

DOCS = pa.schema([
    pa.field("id", pa.int64()),
    pa.field("text", pa.string()),
    pa.field("vector", pa.list_(pa.float32(), 3)),
])
"""

HOOKS = """
import os


def note(records):
    with open(os.environ["LANCEQUEUE_TEST_MARKER"], "a") as out:
        out.write(" ".join(str(record["id"]) for record in records) + "\\n")
"""


def test_schema_and_hook_modules_are_found_in_the_writer_s_current_directory(
    redis_url: str, db_uri: str, producer: Producer, tmp_path: Path
) -> None:
    app = tmp_path / "app"  # a user's project directory: schemas.py and hooks.py beside them
    app.mkdir()
    (app / "schemas.py").write_text(SCHEMAS)
    (app / "app_hooks.py").write_text(HOOKS)
    marker = tmp_path / "flushed.txt"
    env = cli_env(
        LANCEQUEUE_REDIS=redis_url, LANCEQUEUE_DB=db_uri, LANCEQUEUE_TEST_MARKER=str(marker)
    )
    env["PYTHONPATH"] = os.environ.get("PYTHONPATH", "")  # not the repository: only app/
    process = WriterProcess(
        ["--table", "docs", "--schema", "schemas:DOCS", "--on-flushed", "app_hooks:note"],
        tmp_path / "writer.log",
        env,
        command=[str(CONSOLE_SCRIPT)],
        cwd=app,
    )
    try:
        producer.write({"id": 7, "text": "hello", "vector": [1.0, 2.0, 3.0]}, 60)
    finally:
        process.close()
    table = lancedb.connect(db_uri).open_table("docs")
    assert table.schema.field("vector").type == pa.list_(pa.float32(), 3)  # from schemas.py
    assert table.to_arrow().column("id").to_pylist() == [7]
    assert marker.read_text() == "7\n"  # the hook from app_hooks.py ran
