"""A memory's emotional context (optional; one per memory).

Temporal patterns are JSON text, stored as given; that they are an object or a list is
checked with the other JSON types, when records are decoded (``decode.structure_errors``).
"""

import pandera.polars as pa
import polars as pl

from pipeline.schemas.checks import in_range, isin, items_not_null

MOODS = ("positive", "negative", "neutral", "mixed", "ambiguous")

EMOTIONAL_CONTEXT = pa.DataFrameSchema(
    {
        "emotionalContext.primaryMood": pa.Column(pl.String, isin(MOODS)),
        "emotionalContext.intensity": pa.Column(pl.Int64, in_range(1, 10)),
        "emotionalContext.themes": pa.Column(pl.List(pl.String), items_not_null()),
        "emotionalContext.emotionalMarkers": pa.Column(pl.List(pl.String), items_not_null()),
        "emotionalContext.contextualEvents": pa.Column(pl.List(pl.String), items_not_null()),
        "emotionalContext.temporalPatterns": pa.Column(pl.String),
    },
    name="emotional_context",
)
