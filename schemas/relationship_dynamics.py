"""A memory's relationship dynamics (optional; one per memory).

Each part is JSON text the original stored as given: an object or a list (participant
dynamics and communication patterns are lists there, the other parts objects). That a part
is an object or a list is checked with the other JSON types, when records are decoded
(``decode.structure_errors``); a part left out is ``{}``.
"""

import pandera.polars as pa
import polars as pl

PARTS = ("overallDynamics", "participantDynamics", "communicationPatterns", "interactionQuality")

RELATIONSHIP_DYNAMICS = pa.DataFrameSchema(
    {f"relationshipDynamics.{part}": pa.Column(pl.String) for part in PARTS},
    name="relationship_dynamics",
)
