"""A deterministic, offline embedding function registered with LanceDB, and tables using it.

Importing this module registers ``lancequeue-test-hash`` with LanceDB's embedding registry, as a
module of embedding functions would (``lancequeue writer --import tests.fake_embeddings``). The
function hashes each text into a small vector: no network, no model, the same vector for the
same text in every process. ``CALLS`` records each call's texts, so a test can count calls.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
from lancedb.embeddings import TextEmbeddingFunction, get_registry, register
from lancedb.pydantic import LanceModel, Vector

DIM = 4
CALLS: list[list[Any]] = []
"""The texts of every call of any ``HashEmbeddings`` in this process, in order."""
FAILING_TEXT = "the embedding service is down"
"""A text ``HashEmbeddings`` raises on, as a remote embedding service might."""


@register("lancequeue-test-hash")
class HashEmbeddings(TextEmbeddingFunction):  # type: ignore[misc]
    """Each text's SHA-256, its first ``dim`` bytes scaled to [0, 1]; no vector for no text."""

    dim: int = DIM
    salt: str = ""

    def ndims(self) -> int:
        return self.dim

    def generate_embeddings(self, texts: Any, *args: Any, **kwargs: Any) -> list[Any]:
        CALLS.append(list(texts))
        if FAILING_TEXT in texts:
            raise RuntimeError("503 Service Unavailable")
        return [None if text is None else embed(text, self.dim, self.salt) for text in texts]


def embed(text: str, dim: int = DIM, salt: str = "") -> list[float]:
    """The vector ``HashEmbeddings`` gives ``text``, as float32 values."""
    digest = hashlib.sha256((salt + text).encode()).digest()
    return [float(np.float32(byte / 255)) for byte in digest[:dim]]


TEXT = get_registry().get("lancequeue-test-hash").create()
TITLE = get_registry().get("lancequeue-test-hash").create(salt="title:")


class EmbeddedDoc(LanceModel):  # type: ignore[misc]
    """A table whose ``vector`` is computed from ``text``."""

    id: int
    text: str | None = TEXT.SourceField()
    vector: Vector(DIM) = TEXT.VectorField()  # type: ignore[valid-type]


class TwoVectorDoc(LanceModel):  # type: ignore[misc]
    """A table with two computed vector columns, each from its own text column."""

    id: int
    text: str = TEXT.SourceField()
    vector: Vector(DIM) = TEXT.VectorField()  # type: ignore[valid-type]
    title: str = TITLE.SourceField()
    title_vector: Vector(DIM) = TITLE.VectorField()  # type: ignore[valid-type]
