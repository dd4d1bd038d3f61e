"""Loading user objects named ``module:attr`` (schemas, hooks)."""

from __future__ import annotations

import importlib
from typing import Any

from lancequeue.common.errors import ConfigError


def load_object(spec: str, what: str) -> Any:
    """Import ``module:attr`` (``attr`` may be dotted); raise ``ConfigError`` naming ``what``."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"{what} must look like module:attr, got {spec!r}")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{what} {spec!r}: cannot import {module_name!r}: {exc}") from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            raise ConfigError(f"{what} {spec!r}: {module_name!r} has no {attr!r}") from exc
    return obj
