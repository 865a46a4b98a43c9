"""What a dry run would have stored: the rows its decisions keep, held in memory, so that later
batches are decided against them as a real run's are against the rows it committed.

A real run finds its earlier batches' rows in the database (a lookup by key; near-duplicate
candidates by the sources they cite). A dry run writes nothing, so its lookups add these rows
to what the database says (``matches``), by the same rules: a record whose content hash a kept
row has, or whose key one holds; a kept memory citing one of a batch's sources.
"""

from __future__ import annotations

import threading

import polars as pl

from pipeline.dedup.plan import LoadPlan
from pipeline.dedup.resolve import STORED_SIMILAR_SCHEMA, StoredMatches

KEPT_SCHEMA = pl.Schema({"id": pl.String(), "content_hash": pl.String()})


class DryRunStore:
    """The rows kept so far by a dry run's lanes (any thread adds, any thread reads)."""

    def __init__(self) -> None:
        # Whether the database holds the dataset's tables: without them it is not asked.
        self.tables_exist = True
        self._lock = threading.Lock()
        self._rows = pl.DataFrame(schema=KEPT_SCHEMA)
        self._memories: pl.DataFrame | None = None  # comparable frames keyed by ``candidate``

    def add(self, plan: LoadPlan, kept: pl.DataFrame) -> None:
        """The rows a part keeps (``record``, ``id``, ``content_hash``), as if committed."""
        rows = kept.select(*KEPT_SCHEMA).cast(KEPT_SCHEMA)
        memories = None
        if plan.near is not None:
            memories = plan.near.batch.join(kept.select("record", candidate="id"), on="record").drop("record")
        with self._lock:
            self._rows = pl.concat([self._rows, rows])
            if memories is not None:
                self._memories = memories if self._memories is None else pl.concat([self._memories, memories])

    def matches(
        self, plan: LoadPlan, keys: pl.DataFrame, candidates: pl.DataFrame | None
    ) -> tuple[pl.DataFrame, pl.DataFrame | None]:
        """What the database said about ``plan`` (``load.lookups.stored_rows``), with what the
        kept rows say; a row found twice counts once."""
        with self._lock:
            rows, memories = self._rows, self._memories
        found = StoredMatches(keys, pl.DataFrame(schema=STORED_SIMILAR_SCHEMA))
        keys = found.with_rows(plan.records.select("record", "id", "content_hash"), rows).keys
        if candidates is None or memories is None or plan.near is None:
            return keys, candidates
        citing = (
            memories.select("candidate", source="sources")
            .explode("source")
            .join(plan.near.sources, on="source", how="semi")
        )
        cited = memories.join(citing.select("candidate").unique(), on="candidate", how="semi")
        return keys, pl.concat([candidates, cited.select(candidates.columns)]).unique("candidate")
