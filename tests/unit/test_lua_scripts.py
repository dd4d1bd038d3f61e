"""Lua scripts live in .lua files: includes and named values are filled in, mistakes are loud."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from lancequeue.common import protocol
from lancequeue.common.lua_scripts import lua_script
from lancequeue.producer import commands
from lancequeue.writer import acknowledger, claims, lease, stream_group

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An importable package ``scripted`` with an empty ``lua`` folder."""
    (tmp_path / "scripted" / "lua").mkdir(parents=True)
    (tmp_path / "scripted" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "scripted", raising=False)  # an earlier test's
    return tmp_path / "scripted" / "lua"


def test_an_include_line_is_replaced_by_the_file_and_values_by_what_is_given(
    package: Path,
) -> None:
    (package / "prelude.lua").write_text("-- the prelude\nlocal limit = $LIMIT\n")
    (package / "main.lua").write_text("--#include prelude.lua\nreturn redis.call('$FIELD')\n")
    source = lua_script("scripted.module", "main.lua", LIMIT=5, FIELD=b"n")
    assert source == "-- the prelude\nlocal limit = 5\nreturn redis.call('n')\n"


def test_an_include_on_the_last_line_without_a_newline_is_included_too(package: Path) -> None:
    (package / "prelude.lua").write_text("local a = 1\n")
    (package / "main.lua").write_text("return 2\n--#include prelude.lua")
    assert lua_script("scripted.module", "main.lua") == "return 2\nlocal a = 1\n"


def test_a_value_not_given_names_itself(package: Path) -> None:
    (package / "main.lua").write_text("return $MISSING\n")
    with pytest.raises(ValueError, match=r"no value given for \$MISSING"):
        lua_script("scripted.module", "main.lua")


def test_a_value_no_line_uses_is_an_error(package: Path) -> None:
    (package / "main.lua").write_text("return 1\n")
    with pytest.raises(ValueError, match="no line uses UNUSED"):
        lua_script("scripted.module", "main.lua", UNUSED=1)


def test_a_file_that_includes_itself_is_an_error(package: Path) -> None:
    (package / "a.lua").write_text("--#include b.lua\n")
    (package / "b.lua").write_text("--#include a.lua\n")
    with pytest.raises(ValueError, match=r"a\.lua -> b\.lua -> a\.lua"):
        lua_script("scripted.module", "a.lua")


def test_lua_patterns_ending_in_a_dollar_are_left_alone(package: Path) -> None:
    (package / "main.lua").write_text("return string.match(ARGV[1], '^%d+$')\n")
    assert "'^%d+$'" in lua_script("scripted.module", "main.lua")


def test_every_lua_file_is_read_by_a_script_and_no_placeholder_is_left() -> None:
    scripts = [
        protocol.ENQUEUE_SCRIPT,
        protocol.ABANDON_SCRIPT,
        commands.WRITER_UNTIL_SCRIPT,
        claims._CLAIM,
        acknowledger._ACK_AND_ANSWER,
        *(getattr(lease, name) for name in ("_ACQUIRE", "_RAISE_TOKEN", "_RENEW", "_RELEASE")),
        *(
            getattr(stream_group, name)
            for name in ("_ENSURE", "_ANNOUNCE", "_READ_NEW", "_READ_PENDING", "_CLAIM")
        ),
    ]
    text = "\n".join(scripts)
    assert not re.search(r"\$[A-Z]", text)
    assert "--#include" not in text
    for path in ROOT.glob("*/lua/*.lua"):
        first_comment = path.read_text().splitlines()[0]
        assert first_comment.startswith("--") and first_comment in text, path
