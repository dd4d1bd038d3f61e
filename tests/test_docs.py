"""The README's Python examples run as written (only the Redis address changed)."""

from __future__ import annotations

import asyncio
import re
import textwrap
from pathlib import Path

from tests.support import StartWriter, table_ids

README = (Path(__file__).parent.parent / "README.md").read_text()


def _python_blocks() -> list[str]:
    return [block.split("```")[0] for block in README.split("```python\n")[1:]]


async def test_the_readme_s_producer_examples_write_to_the_table(
    start_writer: StartWriter, redis_url: str, db_uri: str
) -> None:
    start_writer(coalesce_ms=20)
    sync_example, async_example = _python_blocks()[:2]
    namespace: dict[str, object] = {}
    sync_code = sync_example.replace("redis://localhost:6379", redis_url)
    await asyncio.to_thread(exec, sync_code, namespace)
    async_code = "async def example():\n" + textwrap.indent(
        async_example.replace("redis://localhost:6379", redis_url), "    "
    )
    exec(async_code, namespace)
    await namespace["example"]()  # type: ignore[operator]
    # 1 + 9 records from the first example, 1 + 9 again from the second
    assert table_ids(db_uri) == sorted([1, *range(9), 0, *range(9)])


def test_every_test_the_readme_s_guarantees_name_exists() -> None:
    """Each promise in "What you can count on" names the tests that check it: they must be
    there, so the README cannot point at a test that was renamed or removed."""
    section = README.split("## What you can count on\n", 1)[1].split("\n## ", 1)[0]
    tests_dir = Path(__file__).parent
    named = re.findall(r"`((?:faults/)?test_\w+\.py)(?:::(test_\w+))?`", section)
    assert len(named) >= 20, named
    for file, test in named:
        path = tests_dir / file
        assert path.is_file(), f"README names {file}, which does not exist"
        if test:
            source = path.read_text()
            assert re.search(rf"^(async )?def {test}\(", source, re.M), f"no {test} in {file}"
