"""A memory, after the legacy transform: one row per record."""

import pandera.polars as pa
import polars as pl

from pipeline.schemas.checks import in_range, iso8601, items_not_null, not_blank, not_empty

MEMORY = pa.DataFrameSchema(
    {
        "id": pa.Column(pl.String, not_empty()),
        "summary": pa.Column(pl.String, not_blank()),
        "confidence": pa.Column(pl.Int64, in_range(1, 10)),
        "participants": pa.Column(
            pl.List(pl.Struct({"id": pl.String, "name": pl.String, "role": pl.String}))
        ),
        "sourceMessageIds": pa.Column(pl.List(pl.String), items_not_null()),
        "extractedAt": pa.Column(pl.String, iso8601(), nullable=True),
    },
    name="memory",
)

PARTICIPANT = pa.DataFrameSchema(
    {
        "participants.id": pa.Column(pl.String, not_empty()),
        "participants.name": pa.Column(pl.String),
        "participants.role": pa.Column(pl.String),
    },
    name="participant",
)
