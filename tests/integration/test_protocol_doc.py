"""PROTOCOL.md is enough to write a producer: its example, which uses nothing but redis-py and
msgpack, runs in a process of its own and its record lands and is answered."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from tests.support import StartWriter, table_ids

PROTOCOL = (Path(__file__).parents[2] / "PROTOCOL.md").read_text()
_SECTION = "## A producer with nothing but redis-py and msgpack"


def _bare_producer_example() -> str:
    section = PROTOCOL.split(_SECTION, 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


async def test_the_protocol_s_bare_producer_example_lands_and_gets_its_reply(
    start_writer: StartWriter, redis_url: str, db_uri: str
) -> None:
    start_writer(coalesce_ms=20)
    example = _bare_producer_example()
    assert "redis.Redis()" in example  # the one line changed: where Redis is
    code = example.replace("redis.Redis()", f"redis.Redis.from_url({redis_url!r})") + (
        "\nimport sys\n"
        "assert not [m for m in sys.modules if m.startswith('lancequeue')], 'imported lancequeue'\n"
    )
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith("[[1, None, b")
    assert table_ids(db_uri) == [1]
