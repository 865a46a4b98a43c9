"""A memory's relationship dynamics (optional; one per memory).

Communication patterns may be an object or a list; the other parts are objects.
"""

import pandera.polars as pa
import polars as pl

from schemas.checks import json_object, json_object_or_list

PARTS = ("overallDynamics", "participantDynamics", "communicationPatterns", "interactionQuality")

RELATIONSHIP_DYNAMICS = pa.DataFrameSchema(
    {
        f"relationshipDynamics.{part}": pa.Column(
            pl.String, json_object_or_list() if part == "communicationPatterns" else json_object()
        )
        for part in PARTS
    },
    name="relationship_dynamics",
)
