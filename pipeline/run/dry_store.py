"""What a dry run would have stored: the rows its decisions keep, held in memory, so that later
batches are decided against them as a real run's are against the rows it committed.

A real run finds its earlier batches' rows in the database (a lookup by key; near-duplicate
candidates by the sources they cite). A dry run writes nothing, so its lookups add these rows
to what the database says (``matches``), by the same rules: a record whose content hash a kept
row has, or whose key one holds; a kept memory citing one of a batch's sources. The rows are
kept per batch and read without copying; each lookup first narrows them to the batch's own
keys and sources.
"""

from __future__ import annotations

import threading

import polars as pl

from pipeline.dedup.plan import LoadPlan
from pipeline.dedup.resolve import STORED_SIMILAR_SCHEMA, StoredMatches

KEPT_SCHEMA = pl.Schema({"id": pl.String(), "content_hash": pl.String()})
CITED_SCHEMA = pl.Schema({"candidate": pl.String(), "source": pl.String()})


class DryRunStore:
    """The rows kept so far by a dry run's lanes (any thread adds, any thread reads)."""

    def __init__(self) -> None:
        # Whether the database holds the dataset's tables: without them it is not asked.
        self.tables_exist = True
        self._lock = threading.Lock()
        self._rows: list[pl.DataFrame] = [pl.DataFrame(schema=KEPT_SCHEMA)]
        self._memories: list[pl.DataFrame] = []  # comparable frames keyed by ``candidate``
        self._cited: list[pl.DataFrame] = [pl.DataFrame(schema=CITED_SCHEMA)]

    def add(self, plan: LoadPlan, kept: pl.DataFrame) -> None:
        """The rows a part keeps (``record``, ``id``, ``content_hash``), as if committed."""
        rows = kept.select(*KEPT_SCHEMA).cast(KEPT_SCHEMA)
        memories = cited = None
        if plan.near is not None:
            memories = plan.near.batch.join(kept.select("record", candidate="id"), on="record").drop("record")
            cited = memories.select("candidate", source="sources").explode("source").drop_nulls()
        with self._lock:
            self._rows.append(rows)
            if memories is not None and cited is not None:
                self._memories.append(memories)
                self._cited.append(cited.cast(CITED_SCHEMA))

    def matches(
        self, plan: LoadPlan, keys: pl.DataFrame, candidates: pl.DataFrame | None
    ) -> tuple[pl.DataFrame, pl.DataFrame | None]:
        """What the database said about ``plan`` (``load.lookups.stored_rows``), with what the
        kept rows say; a row found twice counts once."""
        with self._lock:
            rows, memories, cited = list(self._rows), list(self._memories), list(self._cited)
        records = plan.records.select("record", "id", "content_hash")
        held = pl.concat(rows, rechunk=False).filter(
            pl.col("content_hash").is_in(records["content_hash"].implode())
            | pl.col("id").is_in(records["id"].implode())
        )
        found = StoredMatches(keys, pl.DataFrame(schema=STORED_SIMILAR_SCHEMA))
        keys = found.with_rows(records, held).keys
        if candidates is None or not memories or plan.near is None:
            return keys, candidates
        sources = plan.near.sources["source"].implode()
        citing = pl.concat(cited, rechunk=False).filter(pl.col("source").is_in(sources))["candidate"].unique()
        kept = pl.concat(memories, rechunk=False).filter(pl.col("candidate").is_in(citing.implode()))
        return keys, pl.concat([candidates, kept.select(candidates.columns)]).unique("candidate")
