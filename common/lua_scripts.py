"""Lua scripts, kept as ``.lua`` files in a ``lua`` folder beside the modules that run them.

A line ``--#include NAME.lua`` stands for that file of the same folder, so a script reads top to
bottom as Redis runs it while a fragment shared by several is written once. ``$NAME`` stands
for a value the Python side names (a limit, an entry width, a config field), so it too is
written once. A ``$NAME`` given no value is an error, and so is a value no line uses.
"""

from __future__ import annotations

import re
from importlib.resources import files

_INCLUDE = re.compile(r"^--#include (\S+\.lua)(?:\n|\Z)", re.MULTILINE)
_CONSTANT = re.compile(r"\$([A-Z][A-Z0-9_]*)")


def lua_script(module: str, name: str, **values: int | str | bytes) -> str:
    """The script ``name`` of the ``lua`` folder beside ``module`` (the caller's ``__name__``),
    its includes and values filled in."""
    package = module.rpartition(".")[0]
    folder = files(package).joinpath("lua")

    def read(file: str, including: tuple[str, ...]) -> str:
        if file in including:
            raise ValueError(f"{' -> '.join((*including, file))}: a Lua file includes itself")
        text = folder.joinpath(file).read_text(encoding="utf-8")
        return _INCLUDE.sub(lambda match: read(match[1], (*including, file)), text)

    used: set[str] = set()

    def value(match: re.Match[str]) -> str:
        if match[1] not in values:
            raise ValueError(f"{package} lua/{name}: no value given for ${match[1]}")
        used.add(match[1])
        given = values[match[1]]
        return given.decode() if isinstance(given, bytes) else str(given)

    source = _CONSTANT.sub(value, read(name, ()))
    if unused := sorted(set(values) - used):
        raise ValueError(f"{package} lua/{name}: no line uses {', '.join(unused)}")
    return source
