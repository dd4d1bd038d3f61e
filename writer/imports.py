"""Importing the modules a writer needs loaded before it opens its table (``--import``).

A table created from a ``LanceModel`` whose vector column is a ``VectorField`` of a custom
embedding function names that function in its schema; the writer finds it in LanceDB's
registry, so the module registering it must be imported first.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable

from lancequeue.common.errors import ConfigError


def load_imports(modules: Iterable[str]) -> None:
    """Import each module (dotted name); raise ``ConfigError`` naming one that fails."""
    for name in modules:
        if not name or not all(part.isidentifier() for part in name.split(".")):
            raise ConfigError(f"--import {name!r}: not a module name")
        try:
            importlib.import_module(name)
        except Exception as exc:  # ImportError, or the module itself raising as it loads
            raise ConfigError(
                f"--import {name!r}: cannot import it: {type(exc).__name__}: {exc}"
            ) from exc
