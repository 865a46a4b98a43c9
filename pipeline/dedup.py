"""Exact duplicates inside a batch: the first record with a content hash is kept.

Duplicates of rows already stored are found by the loader, inside the batch's
transaction, so that concurrent or earlier batches are seen as committed.
"""

from __future__ import annotations

import polars as pl

DUPLICATE_MESSAGE = (
    "same content hash as record {}, which is kept; nothing to fix unless the two should differ"
)


def split_exact_duplicates(prepared: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(kept records, duplicates with ``duplicate_of``), by ``content_hash`` in batch order."""
    marked = prepared.with_columns(
        duplicate_of=pl.col("id").first().over("content_hash"),
        first=pl.col("content_hash").is_first_distinct() | pl.col("content_hash").is_null(),
    )
    kept = marked.filter("first").drop("first", "duplicate_of")
    duplicates = marked.filter(~pl.col("first")).select("record", "duplicate_of")
    return kept, duplicates
