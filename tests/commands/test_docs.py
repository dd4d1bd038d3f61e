"""The README's Python examples run as written (only the Redis address changed)."""

from __future__ import annotations

import json
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import lancedb
import pyarrow as pa
import pyarrow.parquet as pq
import redis

from tests.support import CLI, WriterProcess, cli_env, table_ids, wait_for, writer_alive

StartProcess = Callable[..., WriterProcess]

README = (Path(__file__).parents[2] / "README.md").read_text()


def _blocks(language: str) -> list[str]:
    """The README's code blocks of ``language``, in order."""
    return [block.split("```")[0] for block in README.split(f"```{language}\n")[1:]]


def _here(code: str, redis_url: str) -> str:
    """A block as it runs here: the example Redis address is the test's server."""
    return code.replace("redis://localhost:6379", redis_url)


def test_every_python_block_of_the_readme_runs_as_a_script(
    writer_process: StartProcess, redis_url: str, client: redis.Redis, db_uri: str
) -> None:
    writer_process("--coalesce-ms", "20")
    upserts = shlex.split(_here(_upsert_writer_block(), redis_url).replace("./lancedb", db_uri))
    writer_process("--coalesce-ms", "20", *upserts[2:], table="profiles")
    wait_for(lambda: writer_alive(client) and writer_alive(client, "profiles"), 60, "writers")
    blocks = _blocks("python")
    assert len(blocks) == 4
    for block in blocks:
        done = subprocess.run(
            [sys.executable, "-c", _here(block, redis_url).replace("./lancedb", db_uri)],
            capture_output=True,
            text=True,
            timeout=120,
            env=cli_env(),
        )
        assert done.returncode == 0, block + done.stderr
    # the sync block writes ids 0-9, the asyncio one 10-19, the read-your-writes one 20: once
    assert table_ids(db_uri) == list(range(21))
    profiles = lancedb.connect(db_uri).open_table("profiles").to_arrow().to_pylist()
    assert profiles == [{"user_id": 1, "name": "Ada Lovelace"}]


def _upsert_writer_block() -> str:
    (block,) = [block for block in _blocks("sh") if "--upsert-key" in block]
    return block.strip()


SHELL_BLOCKS_NOT_RUN = {
    "python3 -m venv .venv && .venv/bin/pip install . && .venv/bin/lancequeue demo": "installs",
    "python3 -m venv .venv && .venv/bin/pip install '.[test]' && .venv/bin/pytest": "installs",
    "python3 -m venv .venv && .venv/bin/pip install -e '.[test]'": "installs; CI runs it",
    "lancequeue bench --producers 4 --records 100000": "a benchmark of minutes (test_bench.py)",
    "  # in the environment, credentials stay out": "S3 and a Redis Cluster (object storage and "
    "cluster tests run the writer against a local S3 server and a cluster)",
    "lancequeue writer --redis redis://localhost:6379 --db ./lancedb --table profiles": "run with "
    "the upsert example it serves (test_every_python_block_of_the_readme_runs_as_a_script)",
}
"""Shell blocks the suite does not run, by how they start, and why (``.ci/run`` installs
from a clean clone and runs the suite; ``test_demo.py`` runs the demo;
``test_object_storage.py`` and ``test_redis_cluster.py`` the writer on S3 and a cluster)."""


def test_the_readme_s_shell_blocks_run_as_written_against_a_live_writer(
    redis_url: str, client: redis.Redis, tmp_path: Path
) -> None:
    blocks = [block for block in _blocks("sh") if not block.startswith(tuple(SHELL_BLOCKS_NOT_RUN))]
    assert len(_blocks("sh")) == len(blocks) + len(SHELL_BLOCKS_NOT_RUN)
    writer_block, produce_block, dead_letter_block = blocks
    env = cli_env(LANCEQUEUE_REDIS=redis_url)  # for the blocks that name no --redis
    (tmp_path / "records.jsonl").write_text(
        "".join(json.dumps({"id": i, "text": f"t{i}", "vector": [i, 0.5]}) + "\n" for i in range(5))
    )
    rows = {"id": [5, 6], "text": ["a", "b"], "vector": [[1.0, 2.0], [3.0, 4.0]]}
    pq.write_table(pa.table(rows), tmp_path / "more.parquet")
    with open(tmp_path / "writer.log", "wb") as log:
        writer = subprocess.Popen(
            _command(_here(writer_block, redis_url)), cwd=tmp_path, env=env, stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            wait_for(lambda: writer_alive(client), 60, "the README's writer")
            for line in _lines(_here(produce_block, redis_url)):
                done = subprocess.run(
                    _command(line), cwd=tmp_path, env=env, capture_output=True, text=True,
                    timeout=120,
                )  # fmt: skip
                assert done.returncode == 0, line + done.stdout + done.stderr
            assert table_ids(str(tmp_path / "lancedb")) == list(range(7))
            for line in _lines(dead_letter_block):
                done = subprocess.run(
                    _command(line), cwd=tmp_path, env=env, capture_output=True, text=True,
                    input="y\n", timeout=120,
                )  # fmt: skip
                if " purge " in line:  # the example id names no dead letter here
                    assert done.returncode == 1 and "no dead letter" in done.stderr, line
                else:
                    assert done.returncode == 0, line + done.stdout + done.stderr
        finally:
            writer.send_signal(signal.SIGTERM)
            assert writer.wait(60) == 0


def _lines(block: str) -> list[str]:
    return [line for line in block.splitlines() if shlex.split(line, comments=True)]


def _command(line: str) -> list[str]:
    """A ``lancequeue ...`` line as argv, run by this interpreter."""
    words = shlex.split(line, comments=True)
    assert words[0] == "lancequeue", line
    return [*CLI, *words[1:]]


def test_every_test_the_readme_s_guarantees_name_exists() -> None:
    """Each promise in "What you can count on" names the tests that check it: they must be
    there, so the README cannot point at a test that was renamed or removed."""
    section = README.split("## What you can count on\n", 1)[1].split("\n## ", 1)[0]
    tests_dir = Path(__file__).parents[1]
    named = re.findall(
        r"`((?:unit|integration|commands|faults)/test_\w+\.py)(?:::(test_\w+))?`", section
    )
    assert len(named) >= 20, named
    for file, test in named:
        path = tests_dir / file
        assert path.is_file(), f"README names {file}, which does not exist"
        if test:
            source = path.read_text()
            assert re.search(rf"^(async )?def {test}\(", source, re.M), f"no {test} in {file}"
