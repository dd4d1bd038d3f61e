"""The table's embedding functions, computed for each batch as LanceDB's ``table.add()`` would.

A table created from a ``LanceModel`` with a ``VectorField`` names, in its schema metadata
(``embedding_functions``), which registered function computes which vector column from which
source column. ``add()`` computes the vector of every record that has none; so does the writer,
but in **one call per batch and vector column** (``add([record])`` calls once per record), which
is where a batching writer beats ``add()`` per record.

The functions come from LanceDB's registry: a custom one must be registered in the writer's
process before the table is opened (``--import MODULE``). LanceDB is imported only for a table
that has embedding functions.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from lancequeue.common.errors import ConfigError
from lancequeue.writer.strict_values import value_problem

logger = logging.getLogger(__name__)

METADATA_KEY = b"embedding_functions"


class EmbeddingFailed(Exception):
    """An embedding function raised, or answered with the wrong number of vectors: the batch
    is answered ``WriteFailed`` (retriable), as a failed append would be."""


@dataclass(frozen=True)
class _Embedding:
    source: str
    vector: str
    source_type: pa.DataType
    function: Any
    """A ``lancedb.embeddings.EmbeddingFunction``."""
    name: str


class TableEmbeddings:
    """The embedding functions of one table schema."""

    def __init__(self, embeddings: list[_Embedding]) -> None:
        self._embeddings = embeddings
        self._ndims: dict[str, int] = {}

    @classmethod
    def of(cls, schema: pa.Schema) -> TableEmbeddings | None:
        """The schema's embedding functions, or None if it names none. Raises ``ConfigError``
        if a function is not registered in this process or its columns are not in the schema."""
        metadata = schema.metadata or {}
        if METADATA_KEY not in metadata:
            return None
        from lancedb.embeddings import get_registry  # here: only tables that need it pay for it

        try:
            configs = get_registry().parse_functions({METADATA_KEY: metadata[METADATA_KEY]})
        except KeyError as exc:
            raise ConfigError(
                f"the table's schema names the embedding function {exc.args[0]!r}, which is not "
                "registered in the writer's process: give the writer --import MODULE naming "
                "the module that registers it"
            ) from exc
        except Exception as exc:  # malformed metadata, or the function refused its settings
            raise ConfigError(f"the table's embedding functions cannot be loaded: {exc}") from exc
        embeddings = []
        for vector, config in configs.items():
            for column in (config.source_column, vector):
                if column not in schema.names:
                    raise ConfigError(
                        f"the table's embedding function for {vector!r} names column "
                        f"{column!r}, which the table does not have"
                    )
            function = config.function
            embeddings.append(
                _Embedding(
                    config.source_column,
                    vector,
                    schema.field(config.source_column).type,
                    function,
                    getattr(function, "__embedding_function_registry_alias__", None)
                    or type(function).__name__,
                )
            )
        return cls(embeddings)

    @property
    def vector_columns(self) -> set[str]:
        return {embedding.vector for embedding in self._embeddings}

    def compute(
        self, rows: list[dict[str, Any]], rejected: dict[int, str]
    ) -> dict[tuple[int, str], str]:
        """Give each row not in ``rejected`` whose vector is missing or null the one its
        function computes from its source column (a copy of the row replaces it in ``rows``):
        one call per vector column for the whole batch. A vector of the wrong length comes back
        as null, as in ``add()``, and so does the vector of a null source (the function is not
        asked). Returns, for each (row, vector column) computed, why it may be null. Raises
        ``EmbeddingFailed`` if a function fails."""
        computed: dict[tuple[int, str], str] = {}
        for embedding in self._embeddings:
            wanting = []
            for index, row in enumerate(rows):
                if index in rejected or row.get(embedding.vector) is not None:
                    continue
                source = row.get(embedding.source)
                if source is None:
                    rows[index] = {**row, embedding.vector: None}
                    computed[(index, embedding.vector)] = (
                        f"no vector, as {embedding.source!r}, which it is computed from, is null"
                    )
                elif value_problem(source, embedding.source_type) is None:
                    wanting.append(index)
                # else: a source of the wrong kind, rejected when the batch is built
            wanting, sources = _sources(rows, wanting, embedding)
            if not wanting:
                continue
            vectors = self._call(embedding, sources)
            ndims = self._dimensions(embedding)
            for index, vector in zip(wanting, vectors, strict=True):
                usable = vector is not None and _length(vector) == ndims
                rows[index] = {**rows[index], embedding.vector: vector if usable else None}
                computed[(index, embedding.vector)] = (
                    f"the embedding function gave no vector of {ndims} values for "
                    f"{embedding.source!r}"
                )
        return computed

    def _call(self, embedding: _Embedding, sources: pa.Array) -> list[Any]:
        try:
            vectors = list(embedding.function.compute_source_embeddings(sources))
        except Exception as exc:
            raise EmbeddingFailed(
                f"embedding function {embedding.name!r} failed computing {embedding.vector!r} "
                f"from {embedding.source!r} for {len(sources)} records: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        if len(vectors) != len(sources):
            raise EmbeddingFailed(
                f"embedding function {embedding.name!r} gave {len(vectors)} vectors for "
                f"{len(sources)} values of {embedding.source!r}"
            )
        return vectors

    def _dimensions(self, embedding: _Embedding) -> int:
        if embedding.vector not in self._ndims:
            try:
                self._ndims[embedding.vector] = int(embedding.function.ndims())
            except Exception as exc:
                raise EmbeddingFailed(
                    f"embedding function {embedding.name!r} cannot say its dimensions: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
        return self._ndims[embedding.vector]


def _sources(
    rows: list[dict[str, Any]], wanting: list[int], embedding: _Embedding
) -> tuple[list[int], pa.Array]:
    """The source values of rows ``wanting``, as one Arrow array of the source column's type,
    leaving out any Arrow cannot convert (an int out of range: rejected when the batch is
    built)."""
    values = [rows[index].get(embedding.source) for index in wanting]
    try:
        return wanting, pa.array(values, type=embedding.source_type)
    except (pa.ArrowException, TypeError, ValueError, OverflowError):
        pass
    kept = [
        index for index, value in zip(wanting, values, strict=True) if _converts(value, embedding)
    ]
    return kept, pa.array(
        [rows[index].get(embedding.source) for index in kept], type=embedding.source_type
    )


def _converts(value: Any, embedding: _Embedding) -> bool:
    try:
        pa.array([value], type=embedding.source_type)
    except (pa.ArrowException, TypeError, ValueError, OverflowError):
        return False
    return True


def _length(vector: Any) -> int | None:
    try:
        return len(vector)
    except TypeError:
        return None
