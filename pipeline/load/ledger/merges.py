"""``pipeline_merges``: near duplicates merged into a kept row, noted with their batch and folded
into the row's ``deduplication_metadata`` when the run ends."""

from __future__ import annotations

import polars as pl
import pyarrow as pa

from pipeline.datasets.base import Dataset
from pipeline.load.connection import Connection


def ingest_merges(conn: Connection, run_id: str, batch_no: int, merges: pl.DataFrame) -> None:
    """A batch's merge notes (``dedup.decide.Decision.merges``), in its transaction."""
    if not merges.is_empty():
        conn.ingest("pipeline_merges", _merges_arrow(run_id, batch_no, merges))


def _merges_arrow(run_id: str, batch_no: int, merges: pl.DataFrame) -> pa.Table:
    return merges.select(
        run_id=pl.lit(run_id),
        batch_no=pl.lit(batch_no, pl.Int32),
        kept_id="duplicate_of",
        merged_ids="merged_ids",
        merged_sources="merged_sources",
    ).to_arrow(compat_level=pl.CompatLevel.oldest())


def fold_merges(conn: Connection, dataset: Dataset) -> None:
    """Note on each kept row what was merged into it (``deduplication_metadata``), from
    every committed ``pipeline_merges`` row, also those a killed run left: nothing of a
    duplicate is lost. Notes whose row is gone (refused after the decision) stay; folding in
    several steps gives what one fold would (the dataset's ``fold_sql``)."""
    if dataset.near_duplicates is None:  # merges are of near duplicates: it noted none
        return
    with conn.transaction("noting merged near duplicates"):
        # The kept rows are a sliver of the table: find them by key (a scan of the whole
        # table, the planner's choice, took twice as long at 1M rows).
        conn.execute("SET LOCAL enable_seqscan = off")
        conn.execute(dataset.near_duplicates.fold_sql)
