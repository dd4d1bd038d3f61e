"""Key names: one namespace, one hash tag per table."""

from __future__ import annotations

import pytest

from lancequeue.common.errors import ConfigError
from lancequeue.common.keys import TableKeys


def test_every_key_of_a_table_shares_its_cluster_hash_tag() -> None:
    keys = TableKeys("docs")
    names = [keys.stream, keys.config, keys.writer, keys.lease, keys.reply("abc")]
    assert all(name.startswith("lancequeue:{docs}:") for name in names)


@pytest.mark.parametrize("name", ["", "a b", "x}y", "{x", "a:b", "é", "x" * 129])
def test_table_names_that_would_break_the_key_scheme_are_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="invalid table name"):
        TableKeys(name)


@pytest.mark.parametrize(
    "key, usable",
    [
        ("lancequeue:{docs}:reply:abc123", True),
        ("lancequeue:{docs}:reply:", False),
        ("lancequeue:{other}:reply:abc", False),
        ("lancequeue:{docs}:stream", False),
        ("lancequeue:{docs}:reply:abc:extra", False),
        ("session:42", False),
    ],
)
def test_only_reply_keys_of_the_table_are_usable(key: str, usable: bool) -> None:
    assert TableKeys("docs").is_reply_key(key) is usable
