"""How a benchmark's child process hands its figures back: a JSON file, with ``error`` in it
if the run failed."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any


def write_result(result: Path, run: Callable[[], dict[str, Any]]) -> int:
    """Run, write what it returns to ``result`` as JSON and return 0; on failure write the
    error there and raise."""
    try:
        figures = run()
    except Exception as exc:
        result.write_text(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
        raise
    result.write_text(json.dumps(figures, indent=2))
    return 0
