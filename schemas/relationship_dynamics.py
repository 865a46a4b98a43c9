"""A memory's relationship dynamics (optional; one per memory). Each part is a JSON object."""

import pandera.polars as pa
import polars as pl

from schemas.checks import json_object

PARTS = ("overallDynamics", "participantDynamics", "communicationPatterns", "interactionQuality")

RELATIONSHIP_DYNAMICS = pa.DataFrameSchema(
    {f"relationshipDynamics.{part}": pa.Column(pl.String, json_object()) for part in PARTS},
    name="relationship_dynamics",
)
