"""The one shape every stage's rejected records take (``pipeline_rejects`` minus run columns),
and how a run counts them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import polars as pl

if TYPE_CHECKING:
    import pyarrow as pa

REJECT_SCHEMA = pl.Schema(
    {
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
)
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


def arrow_frame(data: pa.Table | pa.RecordBatch) -> pl.DataFrame:
    """``pl.from_arrow`` of a table or a record batch: a DataFrame, which Polars types as a
    DataFrame or a Series because pyarrow has no type hints to tell a table from an array."""
    return cast(pl.DataFrame, pl.from_arrow(data))


def empty_rejects() -> pl.DataFrame:
    return pl.DataFrame(schema=REJECT_SCHEMA)


def rejected_lines(rejects: pl.DataFrame) -> pl.DataFrame:
    """Distinct record positions in a reject frame (a record may fail several checks)."""
    return rejects.select("source_file", "source_line").unique()


@dataclass(frozen=True)
class RejectCounts:
    """What the report counts of rejects: a record counts once, in the category that rejected
    it, even when it failed several checks; reasons count reject rows; merged near duplicates
    are binned by score."""

    records: dict[str, int]
    rows: dict[str, int]
    similarity_bins: dict[str, int]

    @property
    def similar(self) -> int:
        return self.rows.get("similar_duplicate", 0)

    @classmethod
    def of(cls, rejects: pl.DataFrame) -> RejectCounts:
        position = pl.struct("source_file", "source_line")
        records = rejects.group_by("category").agg(position.n_unique())
        similar = rejects.filter(pl.col("reason") == "similar_duplicate")["similarity"]
        return cls(
            records=dict(records.iter_rows()),
            rows=dict(rejects["reason"].value_counts().iter_rows()),
            similarity_bins=similarity_bins(similar),
        )


def similarity_bins(scores: pl.Series) -> dict[str, int]:
    """Scores in bins 0.05 wide, labelled ``0.85-0.90``; 1.0 falls in the last one."""
    # Rounded first: scores are stored as real, and 0.9 must not fall into 0.85-0.90.
    hundredths = ((scores.cast(pl.Float64) * 20).round(4).floor().clip(0, 19) * 5).cast(pl.Int64)
    return {
        f"{low / 100:.2f}-{(low + 5) / 100:.2f}": n
        for low, n in sorted(hundredths.value_counts().iter_rows())
    }
