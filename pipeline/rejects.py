"""The one shape every stage's rejected records take (``pipeline_rejects`` minus run columns)."""

from __future__ import annotations

import polars as pl

REJECT_SCHEMA = {
    "source_file": pl.String,
    "source_line": pl.Int64,
    "category": pl.String,
    "reason": pl.String,
    "field": pl.String,
    "message": pl.String,
    "raw": pl.String,
    "duplicate_of": pl.String,
    "similarity": pl.Float32,
}
CATEGORIES = ("parse", "validation", "deduplication", "database")


def reject_frame(
    records: pl.LazyFrame,
    *,
    category: str,
    reason: pl.Expr,
    field: pl.Expr,
    message: pl.Expr,
    duplicate_of: pl.Expr | None = None,
    similarity: pl.Expr | None = None,
) -> pl.DataFrame:
    """Rejects for ``records`` (which carry ``source_file``, ``source_line`` and ``raw``)."""
    return (
        records.select(
            "source_file",
            "source_line",
            category=pl.lit(category),
            reason=reason,
            field=field,
            message=message,
            raw="raw",
            duplicate_of=pl.lit(None) if duplicate_of is None else duplicate_of,
            similarity=pl.lit(None) if similarity is None else similarity,
        )
        .cast(REJECT_SCHEMA)
        .collect()
    )


def empty_rejects() -> pl.DataFrame:
    return pl.DataFrame(schema=REJECT_SCHEMA)


def rejected_lines(rejects: pl.DataFrame) -> pl.DataFrame:
    """Distinct record positions in a reject frame (a record may fail several checks)."""
    return rejects.select("source_file", "source_line").unique()
