"""``pipeline_rejects``: every rejected record of a run, as the stages reject it."""

from __future__ import annotations

import polars as pl
import pyarrow as pa

from pipeline.frames import REJECT_SCHEMA
from pipeline.load.connection import Connection


def ingest_rejects(conn: Connection, run_id: str, rejects: pl.DataFrame) -> None:
    if not rejects.is_empty():
        conn.ingest("pipeline_rejects", _rejects_arrow(run_id, rejects))


def _rejects_arrow(run_id: str, rejects: pl.DataFrame) -> pa.Table:
    # PostgreSQL text cannot hold NUL; keep the rest of the record exactly.
    return (
        rejects.select(pl.lit(run_id).alias("run_id"), *REJECT_SCHEMA)
        .with_columns(pl.col("raw", "message").str.replace_all("\x00", "\\u0000", literal=True))
        .to_arrow(compat_level=pl.CompatLevel.oldest())
    )


def damaged_inputs(conn: Connection, run_id: str) -> list[dict]:
    """The compressed inputs a run read only up to damage in their data, and the line it is at."""
    damaged = conn.execute(
        "SELECT source_file AS path, source_line AS line FROM pipeline_rejects "
        "WHERE run_id = $1 AND reason = 'corrupt_compressed_input' ORDER BY source_file",
        (run_id,),
    )
    return damaged.to_pylist() if damaged is not None else []
