"""The benchmark's records: ``{"id", "text", "vector"}``, the same record ``i`` in every process.

Records are drawn in aligned blocks of :data:`BLOCK_RECORDS`, each from a generator seeded with
``(seed, block)``, so any slice ``start .. start + count`` is reproducible on its own: each
producer process generates only its share, and the baselines generate the same records.
Only numpy is used, so producers can generate them without pyarrow.
"""

from __future__ import annotations

from typing import Any

import numpy as np

BLOCK_RECORDS = 1024
"""Records drawn per seeded block (the unit of reproducibility)."""
DEFAULT_TEXT_BYTES = 64
"""Length of each record's ``text`` in bytes (ASCII) unless told otherwise."""
DEFAULT_SEED = 0
"""Seed of the record generator unless told otherwise."""
_WORDS = (
    *("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india"),
    *("juliet", "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo"),
    *("sierra", "tango", "uniform", "victor", "whiskey", "xray", "yankee", "zulu"),
)


def _text(i: int, words: np.ndarray[Any, Any], text_bytes: int) -> str:
    """``doc <i>`` followed by words, cut or padded to exactly ``text_bytes`` ASCII bytes."""
    parts = [f"doc {i}"]
    length = len(parts[0])
    position = 0
    while length < text_bytes:
        word = _WORDS[int(words[position % len(words)])]
        parts.append(word)
        length += len(word) + 1
        position += 1
    return " ".join(parts)[:text_bytes].ljust(text_bytes, ".")


def make_records(
    start: int,
    count: int,
    dim: int,
    text_bytes: int = DEFAULT_TEXT_BYTES,
    seed: int = DEFAULT_SEED,
) -> list[dict[str, Any]]:
    """Records ``start`` .. ``start + count - 1``; record ``i`` is the same in every call.

    ``vector`` is a contiguous float32 row of length ``dim``; ``text`` is ``text_bytes`` long.
    """
    if start < 0 or count < 0 or dim <= 0 or text_bytes < 0:
        raise ValueError("start and count must not be negative, dim must be positive")
    records: list[dict[str, Any]] = []
    index = start
    end = start + count
    while index < end:
        block = index // BLOCK_RECORDS
        rng = np.random.default_rng([seed, block])
        vectors = rng.standard_normal((BLOCK_RECORDS, dim), dtype=np.float32)
        words = rng.integers(0, len(_WORDS), size=(BLOCK_RECORDS, 8))
        stop = min(end, (block + 1) * BLOCK_RECORDS)
        for i in range(index, stop):
            offset = i - block * BLOCK_RECORDS
            records.append(
                {
                    "id": i,
                    "text": _text(i, words[offset], text_bytes),
                    "vector": vectors[offset],
                }
            )
        index = stop
    return records


def share(total: int, parts: int, part: int) -> tuple[int, int]:
    """``(start, count)`` of part ``part`` when ``total`` records are split into ``parts``
    contiguous slices whose sizes differ by at most one."""
    if parts <= 0 or not 0 <= part < parts:
        raise ValueError(f"part {part} of {parts}")
    size, extra = divmod(total, parts)
    start = part * size + min(part, extra)
    return start, size + (1 if part < extra else 0)
